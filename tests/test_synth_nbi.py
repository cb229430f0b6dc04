"""NBI stretches in procedure videos (pagkd_core/synth/nbi.py) and the demo clip's seed search
(story.py). Tiny, seeded clips; everything here is SYNTHETIC."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from pagkd_core.synth import VideoConfig, iter_procedure_frames, write_video
from pagkd_core.synth.cli import main
from pagkd_core.synth.config import load
from pagkd_core.synth.nbi import CLOSE, MIN_LENGTH, MIN_WLI
from pagkd_core.synth.story import Story, _runs, check, find_seed, timeline, truth_rows

ROOT = Path(__file__).resolve().parents[1]
FPS = 10
CLIP = VideoConfig(width=64, height=36, fps=FPS, seconds=30, seed=3, text=False, nbi_fraction=1.0)


@pytest.fixture(scope="module")
def rendered():
    """(frames, truth rows) of a small clip in which every close-viewed lesion gets its NBI stretch."""
    frames, rows = zip(*iter_procedure_frames(CLIP))
    return list(frames), list(rows)


def _stretches(rows) -> list[tuple[int, int]]:
    return _runs([r["modality"] == "NBI" for r in rows])


def test_nbi_stretches_sit_inside_a_lesions_close_view(rendered):
    _, rows = rendered
    stretches = _stretches(rows)
    assert len(stretches) >= 2  # every close-viewed lesion gets one at nbi_fraction=1
    for a, b in stretches:
        assert b - a >= MIN_LENGTH * FPS - 1 or b == len(rows)
        lesion = rows[a]["lesion_id"]
        assert lesion and all(r["lesion_id"] == lesion for r in rows[a:b])  # one lesion, in view throughout
        assert all(r["coverage"] >= 0.02 for r in rows[a:b])
        before = rows[a - round(MIN_WLI * FPS) : a]  # a WLI look at the same lesion, in close view, first
        assert all(r["modality"] == "WLI" and r["lesion_id"] == lesion for r in before)
        assert before[-1]["coverage"] >= CLOSE
        if b < len(rows):  # (unless the clip ends first) back to WLI before leaving the lesion
            assert rows[b]["modality"] == "WLI" and rows[b]["lesion_id"] == lesion
    assert any(b < len(rows) for _, b in stretches)


def _red_excess(rgb: np.ndarray) -> float:
    px = rgb.reshape(-1, 3).astype(np.float64)
    lit = px[(px.max(axis=1) > 30) & (px.min(axis=1) < 215)]
    r, g, b = lit.mean(axis=0)
    return (r - g) / (r + g + b)


def test_truth_modality_matches_the_rendered_light(rendered):
    """NBI frames are shaded in NBI: the mucosa loses WLI's red excess (red well above green)."""
    frames, rows = rendered
    score = np.array([_red_excess(f) for f in frames])
    nbi = np.array([r["modality"] == "NBI" for r in rows])
    assert nbi.any() and (~nbi).any()
    threshold = (np.median(score[nbi]) + np.median(score[~nbi])) / 2
    assert np.median(score[nbi]) < np.median(score[~nbi]) - 0.05
    assert ((score < threshold) == nbi).mean() >= 0.97


def test_lesions_and_camera_do_not_depend_on_the_option():
    """Same lesions, boxes and coverage per frame with and without NBI stretches; a higher
    nbi_fraction adds stretches and keeps the others."""
    keys = ("lesion_visible", "lesion_id", "class", "x0", "y0", "x1", "y1", "coverage", "wli_evidence")
    runs = {f: truth_rows(dataclasses.replace(CLIP, nbi_fraction=f)) for f in (0.0, 0.5, 1.0)}
    for f in (0.5, 1.0):
        assert [[r[k] for k in keys] for r in runs[f]] == [[r[k] for k in keys] for r in runs[0.0]]
    mods = {f: np.array([r["modality"] == "NBI" for r in rows]) for f, rows in runs.items()}
    assert not mods[0.0].any() and mods[1.0].sum() > mods[0.5].sum() > 0
    assert not (mods[0.5] & ~mods[1.0]).any()


def test_pure_clips_as_before():
    nbi = truth_rows(dataclasses.replace(CLIP, seconds=12, modality="NBI"))
    assert {r["modality"] for r in nbi} == {"NBI"} and all(r["wli_evidence"] is None for r in nbi)


def test_truth_only_pass_gives_the_written_truth(rendered):
    """All of it but lesion_contrast, which needs the shading a truth-only pass skips."""
    _, rows = rendered
    fast = truth_rows(CLIP)
    assert all(r["lesion_contrast"] is None for r in fast)
    assert any(r["lesion_visible"] and r["lesion_contrast"] is not None for r in rows)
    assert [{**r, "lesion_contrast": None} for r in rows] == fast


def test_seed_search_picks_the_first_seed_that_tells_the_story():
    # a shorter story for a 20 s clip at 64x36 (the demo's own is checked below)
    story = Story(approach=2.0, call=1.5, call_classes=1, call_evidence=0.0, no_lesion=1.0, nbi=1.0)
    cfg = dataclasses.replace(CLIP, seconds=20, nbi_fraction=0.5)
    log: list[str] = []
    found = find_seed(cfg, 0, 8, story, log=log.append)
    assert found is not None, log
    seed, rows = found
    assert check(rows, FPS, story) == [] and log[-1] == f"seed {seed}: tells the story"
    assert all("tells the story" not in line for line in log[:-1])  # the first one
    lines = timeline(rows, FPS)
    assert any(line.endswith("no lesion") for line in lines) and any(
        line.endswith("close NBI") for line in lines
    )


def test_demo_config_seed_tells_the_story():
    """configs/demo_clip.yaml's seed, checked on its truth at 1/10 of the size (the story has
    margins; --find-seed searched at full size)."""
    cfg = load(VideoConfig, ROOT / "configs" / "demo_clip.yaml")
    assert (cfg.width, cfg.height, cfg.fps, cfg.seconds, cfg.modality) == (1280, 720, 30, 30, "WLI")
    rows = truth_rows(dataclasses.replace(cfg, width=128, height=72))
    assert check(rows, cfg.fps) == []


def test_story_check_names_what_is_missing_and_reads_the_truth_file(tmp_path):
    cfg = dataclasses.replace(CLIP, seconds=12, nbi_fraction=0.0)
    missing = check(truth_rows(cfg), FPS)
    assert any("NBI" in m for m in missing)
    _, truth = write_video(cfg, tmp_path / "clip.mp4", progress=False)
    with open(truth, newline="") as fh:
        assert check(list(csv.DictReader(fh)), FPS) == missing  # the same verdict on the CSV's strings


@pytest.mark.parametrize(
    "argv, words",
    [(["--nbi-fraction", "1.5"], "nbi_fraction"), (["--find-seed", "0", "--tries", "0"], "--tries")],
)
def test_bad_nbi_arguments_give_one_line(tmp_path, capsys, argv, words):
    assert main(["video", "--out", str(tmp_path / "x.mp4"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err
