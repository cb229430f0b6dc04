"""Synthetic data generator: determinism, layout/manifest, video decoding and truth, CLI errors."""

from __future__ import annotations

import csv
import itertools
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from pagkd_core.synth import ImageConfig, VideoConfig, generate_images, iter_procedure_frames, write_video
from pagkd_core.synth.cli import main
from pagkd_core.synth.procedure import Procedure
from pagkd_core.synth.video import MIN_VISIBLE

ROOT = Path(__file__).resolve().parents[1]


def _images(out: Path, **kw) -> Path:
    cfg = ImageConfig(out=str(out), lesions_per_class=3, views=2, size=40, seed=kw.pop("seed", 3), **kw)
    return generate_images(cfg, progress=False)


def _rows(manifest: Path) -> list[dict]:
    with open(manifest, newline="") as fh:
        return list(csv.DictReader(fh))


def test_images_are_deterministic_for_a_seed(tmp_path):
    a, b, c = (_images(tmp_path / n, seed=s) for n, s in (("a", 3), ("b", 3), ("c", 4)))
    files_a = sorted(p.relative_to(a.parent) for p in a.parent.rglob("*.png"))
    assert files_a == sorted(p.relative_to(b.parent) for p in b.parent.rglob("*.png"))
    assert a.read_bytes() == b.read_bytes()
    for rel in files_a:
        assert (a.parent / rel).read_bytes() == (b.parent / rel).read_bytes(), rel
    pngs_c = {p.name: p.read_bytes() for p in c.parent.rglob("*.png")}
    assert not any(pngs_c.get(rel.name) == (a.parent / rel).read_bytes() for rel in files_a)


@pytest.mark.parametrize("paired_fraction", [0.0, 0.5, 1.0])
def test_layout_and_manifest_agree(tmp_path, paired_fraction):
    manifest = _images(
        tmp_path, paired_fraction=paired_fraction, classes=["hyperplastic", "adenoma", "adenocarcinoma"]
    )
    root = manifest.parent
    rows = _rows(manifest)
    assert list(rows[0]) == ["path", "lesion_id", "class", "modality", "view", "paired"]
    listed = {r["path"] for r in rows}
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*.png")}
    assert listed == on_disk and len(listed) == len(rows)
    mods_of, class_of = {}, {}
    for r in rows:
        modality, cls, name = r["path"].split("/")
        assert (modality, cls) == (r["modality"], r["class"])
        assert modality in ("WLI", "NBI") and cls in ("hyperplastic", "adenoma", "adenocarcinoma")
        assert name == f"{r['lesion_id']}_{r['view']}.png"
        assert class_of.setdefault(r["lesion_id"], cls) == cls  # one class per lesion id
        mods_of.setdefault(r["lesion_id"], set()).add(modality)
    assert len(class_of) == 9  # 3 lesions x 3 classes, unique ids
    for r in rows:
        assert r["paired"] == str(int(mods_of[r["lesion_id"]] == {"WLI", "NBI"}))
    n_paired = sum(m == {"WLI", "NBI"} for m in mods_of.values())
    assert n_paired == 3 * round(3 * paired_fraction)
    for lid, mods in mods_of.items():  # every view of every modality
        assert sorted(int(r["view"]) for r in rows if r["lesion_id"] == lid) == sorted([0, 1] * len(mods))


def test_rerun_into_the_same_folder_keeps_layout_and_manifest_in_step(tmp_path):
    _images(tmp_path, paired_fraction=1.0)
    manifest = _images(tmp_path, paired_fraction=0.0, seed=5)
    listed = {r["path"] for r in _rows(manifest)}
    assert listed == {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png")}


def test_images_show_the_requested_modality_colours(tmp_path):
    import cv2

    rows = _rows(_images(tmp_path, paired_fraction=1.0))
    mean = {
        m: np.mean(
            [
                cv2.imread(str(tmp_path / r["path"]))[..., ::-1].reshape(-1, 3).mean(0)
                for r in rows
                if r["modality"] == m
            ],
            axis=0,
        )
        for m in ("WLI", "NBI")
    }
    assert mean["WLI"][0] > mean["WLI"][1] * 1.3  # WLI: red mucosa
    assert mean["NBI"][1] > mean["NBI"][0] * 0.9  # NBI: green-cyan, not red


def _decode(path: Path):
    with av.open(str(path)) as box:
        stream = box.streams.video[0]
        frames = [(f.to_ndarray(format="rgb24"), f.time) for f in box.decode(stream)]
        return frames, stream.average_rate, (stream.width, stream.height)


def test_video_decodes_with_frame_count_fps_and_aligned_truth(tmp_path):
    cfg = VideoConfig(width=96, height=64, fps=25, seconds=1.2, seed=1)
    video, truth = write_video(cfg, tmp_path / "clip.mp4", progress=False)
    assert truth == tmp_path / "clip.truth.csv"
    frames, rate, size = _decode(video)
    assert len(frames) == 30 and rate == 25 and size == (96, 64)
    rows = _rows(truth)
    assert list(rows[0]) == [
        "frame",
        "pts",
        "lesion_visible",
        "lesion_id",
        "class",
        "x0",
        "y0",
        "x1",
        "y1",
        "modality",
        "coverage",
        "wli_evidence",
        "lesion_contrast",
    ]  # the first nine are the original layout: new columns are appended
    assert {r["modality"] for r in rows} == {"WLI"}
    assert [int(r["frame"]) for r in rows] == list(range(30))
    for r, (_, t) in zip(rows, frames):
        assert abs(float(r["pts"]) - t) < 1e-3
    # same seed -> identical truth file
    _, truth2 = write_video(cfg, tmp_path / "again.mp4", progress=False)
    assert truth.read_bytes() == truth2.read_bytes()


def test_truth_boxes_cover_lesions_and_lie_inside_the_frame():
    cfg = VideoConfig(width=128, height=72, fps=4, seconds=30, seed=2, text=False, nbi_fraction=0.0)
    seen, hidden = set(), 0
    for rgb, t in iter_procedure_frames(cfg):
        assert rgb.shape == (72, 128, 3) and rgb.dtype == np.uint8
        assert t["modality"] == "WLI"
        if t["lesion_visible"]:
            assert 0 <= t["x0"] <= t["x1"] < 128 and 0 <= t["y0"] <= t["y1"] < 72
            assert t["class"] in cfg.classes and t["lesion_id"]
            assert MIN_VISIBLE <= t["coverage"] <= 1 and 0 <= t["wli_evidence"] <= 1
            assert t["lesion_contrast"] >= 0
            seen.add(t["class"])
        else:
            assert t["x0"] is None and t["lesion_id"] == "" and t["coverage"] == 0
            assert t["wli_evidence"] is None and t["lesion_contrast"] is None
            hidden += 1
    assert seen == {"hyperplastic", "adenoma"} and hidden > 0  # lesions of both classes come and go


def test_video_lesions_show_a_fixed_evidence_share_nbi_near_full():
    """Each video lesion keeps one evidence share for the whole clip (U(0, 1) in WLI, as the
    image views); NBI clips show most of the cue and leave the WLI column empty."""
    ev: dict[str, set] = {}
    for _, t in iter_procedure_frames(
        VideoConfig(width=96, height=54, fps=4, seconds=20, seed=2, text=False)
    ):
        if t["lesion_visible"]:
            ev.setdefault(t["lesion_id"], set()).add(t["wli_evidence"])
    assert ev and all(len(v) == 1 for v in ev.values())
    nbi = VideoConfig(width=96, height=54, fps=4, seconds=8, seed=2, text=False, modality="NBI")
    rows = [t for _, t in iter_procedure_frames(nbi)]
    assert {t["modality"] for t in rows} == {"NBI"} and all(t["wli_evidence"] is None for t in rows)
    proc = Procedure(nbi)
    proc.step(0.0, 0.1)
    assert all(0.8 <= p.evidence <= 1.0 for p in proc.lesions)


def test_live_source_is_endless_when_seconds_is_zero():
    it = iter_procedure_frames(VideoConfig(width=64, height=48, fps=30, seconds=0, seed=0))
    frames = list(itertools.islice(it, 3))
    assert [t["frame"] for _, t in frames] == [0, 1, 2]


@pytest.mark.parametrize(
    "argv, words",
    [
        (["images", "--lesions-per-class", "-1"], "lesions-per-class"),
        (["images", "--classes", "hyperplastic,polyp"], "unknown class 'polyp'"),
        (["images", "--views", "0"], "views"),
        (["images", "--paired-fraction", "1.5"], "paired-fraction"),
        (["video", "--size", "640by480"], "--size"),
        (["video", "--fps", "0"], "--fps"),
        (["video", "--seconds", "-2"], "--seconds"),
    ],
)
def test_bad_arguments_give_one_line_and_nonzero_exit(tmp_path, capsys, argv, words):
    out = str(tmp_path / ("x.mp4" if argv[0] == "video" else "x"))
    assert main([argv[0], "--out", out, *argv[1:]]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err and "Traceback" not in err


def test_unwritable_output_folder_is_reported(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert (
        main(
            [
                "images",
                "--out",
                str(blocker / "data"),
                "--lesions-per-class",
                "1",
                "--views",
                "1",
                "--size",
                "32",
                "--no-progress",
            ]
        )
        != 0
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot write" in err


def test_module_entry_point_exits_nonzero_without_traceback():
    r = subprocess.run(
        [sys.executable, "-m", "pagkd_core.synth", "images", "--out", "/tmp/x", "--lesions-per-class", "-3"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_calibrate_runs_end_to_end_on_a_tiny_set(tmp_path):
    import json

    assert (
        main(
            [
                "calibrate",
                "--out",
                str(tmp_path),
                "--lesions-per-class",
                "4",
                "--views",
                "1",
                "--size",
                "32",
                "--steps",
                "2",
                "--batch-size",
                "4",
                "--threads",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "calibration.json").read_text())
    assert result["synthetic"] and set(result["auc"]) == {"NBI", "WLI"}
    assert all(0.0 <= v <= 1.0 for v in result["auc"].values())


def test_interrupted_video_leaves_no_clip_a_cache_would_take_for_finished(tmp_path, monkeypatch):
    """write_video renames its outputs only when complete: killed half-way, neither
    clip.mp4 nor clip.truth.csv exists (benchmarks.video reuses any pair it finds)."""
    import pagkd_core.synth.video as V

    real = V.iter_procedure_frames

    def dies_after_three(cfg):
        for i, item in enumerate(real(cfg)):
            if i == 3:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(V, "iter_procedure_frames", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        write_video(VideoConfig(width=96, height=64, seconds=1.0, seed=3), tmp_path / "clip.mp4", progress=False)
    assert not (tmp_path / "clip.mp4").exists() and not (tmp_path / "clip.truth.csv").exists()
