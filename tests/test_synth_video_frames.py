"""Training frames cut from procedures (`synth video-frames`): labels from the procedure's truth,
the same camera path whatever is shaded, included sets that resolve and are never deleted."""

from __future__ import annotations

import csv
from pathlib import Path

from pagkd_core.data.layouts import read_manifest
from pagkd_core.synth import NO_LESION, FrameConfig, generate_frames
from pagkd_core.synth.cli import main
from pagkd_core.synth.config import VideoConfig
from pagkd_core.synth.video import iter_procedure_frames

SMALL = {"width": 320, "height": 180, "seconds": 6.0, "fps": 10}


def _rows(manifest: Path) -> list[dict]:
    with open(manifest, newline="") as fh:
        return list(csv.DictReader(fh))


def test_shading_every_nth_frame_keeps_the_truth_and_the_shaded_pictures_of_the_camera_path():
    cfg = VideoConfig(seed=3, motion_blur=0.0, exposure_jitter=0.0, **SMALL)
    full = list(iter_procedure_frames(cfg))
    some = list(iter_procedure_frames(cfg, shade_every=3))
    geometry = lambda t: {k: v for k, v in t.items() if k != "lesion_contrast"}
    assert [geometry(t) for _, t in full] == [geometry(t) for _, t in some]  # the procedure does not depend on shading
    # contrast is measured on shaded frames (at their exposure), for a lesion in view
    assert all((t["lesion_contrast"] is not None) == (rgb is not None and t["lesion_visible"] == 1) for rgb, t in some)
    assert any(t["lesion_contrast"] is not None for _, t in some)
    assert [f for f, (rgb, _) in enumerate(some) if rgb is not None] == list(range(0, len(full), 3))
    assert all(rgb.shape == (180, 320, 3) for rgb, _ in some if rgb is not None)


def test_frames_are_labelled_from_the_truth_and_include_another_set(tmp_path):
    closeups = tmp_path / "closeups"
    generate_frames(
        FrameConfig(out=str(closeups), width=320, height=180, size=48, lesions_per_class=1,
                    frames_per_lesion=1, no_lesion_frames=2, lesions_per_patient=3, seed=1),
        progress=False,
    )  # fmt: skip
    out = tmp_path / "video"
    argv = ["video-frames", "--out", str(out), "--seeds", "7-8", "--size", "320x180", "--fps", "10",
            "--seconds", "6", "--every", "5", "--frame-size", "48", "--min-coverage", "0",
            "--include", str(closeups), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    rows = _rows(out / "manifest.csv")
    video = [r for r in rows if r["patient_id"].startswith("v")]
    assert len(video) == 2 * 12 and {r["patient_id"] for r in video} == {"v7", "v8"}
    for seed in (7, 8):
        truth = [
            t
            for _, t in iter_procedure_frames(
                VideoConfig(seed=seed, nbi_fraction=0.0, **SMALL), truth_only=True
            )
        ]
        for r in (r for r in video if r["patient_id"] == f"v{seed}"):
            t = truth[int(r["view"])]
            assert r["modality"] == "WLI" and int(r["view"]) % 5 == 0
            assert r["class"] == (t["class"] if t["lesion_visible"] else NO_LESION)
            assert float(r["coverage"]) == t["coverage"]
    assert len(rows) - len(video) == len(_rows(closeups / "manifest.csv"))
    samples = read_manifest(out / "manifest.csv")  # what training reads: every path resolves
    assert len(samples) == len(rows) and all(Path(s.path).is_file() for s in samples)
    assert {s.modality for s in samples} == {"WLI", "NBI"}

    # far lesions left out: the same frames less those showing a lesion under 2% of the field
    near = [*argv[:2], str(tmp_path / "near"), *argv[3:15], "--min-coverage", "0.02", "--no-progress"]
    assert main(near) == 0
    expect = [r["path"] for r in video if r["class"] == NO_LESION or float(r["coverage"]) >= 0.02]
    assert [r["path"] for r in _rows(tmp_path / "near" / "manifest.csv")] == expect and len(expect) < len(
        video
    )

    kept = sorted(closeups.rglob("*.png"))
    assert main(argv[:4] + ["7"] + argv[5:]) == 0  # a re-run replaces its own frames only
    assert sorted(closeups.rglob("*.png")) == kept
    assert {r["patient_id"] for r in _rows(out / "manifest.csv") if r["patient_id"].startswith("v")} == {"v7"}
    assert not list((out / "WLI").rglob("v8-*"))


def test_bad_seeds_give_one_line(tmp_path, capsys):
    assert main(["video-frames", "--out", str(tmp_path), "--seeds", "a-b"]) == 2
    err = capsys.readouterr().err
    assert "seeds look like 500-515" in err and len(err.strip().splitlines()) == 1
