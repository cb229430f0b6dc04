"""Training frames rendered like the videos (`synth frames`): labels vs the renderer's truth,
unpairedness, determinism, the manifest through pagkd_core.data, and the runtime's crop."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from pagkd_core.data.layouts import class_list, read_manifest
from pagkd_core.data.splits import make_folds
from pagkd_core.synth import FRAME_COLUMNS, NO_LESION, FrameConfig, generate_frames
from pagkd_core.synth.cli import main
from pagkd_core.synth.frames import PatientRenderer, lesion_id, plan
from pagkd_core.synth.poses import down_the_lumen, look_at_wall
from pagkd_core.synth.scene import content_box

# small frames: 320x180 video frames (lumen at 160x90), saved at 48 px
SMALL = {"width": 320, "height": 180, "size": 48, "lesions_per_patient": 3}


def _cfg(out: Path | str = "unused", **kw) -> FrameConfig:
    values = {**SMALL, "lesions_per_class": 2, "frames_per_lesion": 3, "no_lesion_frames": 4, "seed": 5, **kw}
    return FrameConfig(out=str(out), **values)


def _rows(manifest: Path) -> list[dict]:
    with open(manifest, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return generate_frames(_cfg(tmp_path_factory.mktemp("frames")), progress=False)


def _saved_mask(shot, tube, size: int) -> np.ndarray:
    """The lesion's pixels (render-size truth mask) carried into the saved image's pixels."""
    full = cv2.resize(shot.truth.mask.astype(np.uint8), (tube.W, tube.H), interpolation=cv2.INTER_NEAREST)
    x0, y0, x1, y1 = shot.crop
    return cv2.resize(full[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_NEAREST) > 0


@pytest.mark.parametrize("which", [0, 1], ids=["WLI", "NBI"])
def test_labels_match_the_renderers_truth(which):
    cfg = _cfg()
    patient = next(p for p in plan(cfg) if p.modality == ("WLI", "NBI")[which])
    pr = PatientRenderer(cfg, patient)
    n = 0
    for shot, row in pr.rows():
        assert shot.image.shape == (48, 48, 3) and row["modality"] == patient.modality
        assert row["path"] == f"{row['modality']}/{row['class']}/{row['lesion_id']}_{row['view']}.png"
        if row["class"] == NO_LESION:  # nothing placed: no lesion pixel, no box, coverage 0
            assert shot.truth.lesion is None and not shot.truth.mask.any() and row["coverage"] == 0
            assert row["x0"] == "" and row["wli_evidence"] == "" and row["distance"] == ""
            continue
        n += 1
        les = shot.truth.lesion.lesion
        assert (les.lesion_id, les.cls) == (row["lesion_id"], row["class"])  # the lesion the renderer saw
        assert row["coverage"] == round(shot.truth.coverage, 5) and shot.truth.coverage >= cfg.min_coverage
        # share of the field (which is smaller than the frame), counted on the truth mask
        assert shot.truth.mask.sum() / shot.truth.mask.size <= shot.truth.coverage <= 1
        mask = _saved_mask(shot, pr.tube, cfg.size)
        x0, y0, x1, y1 = row["x0"], row["y0"], row["x1"], row["y1"]
        assert 0 <= x0 <= x1 < 48 and 0 <= y0 <= y1 < 48
        ys, xs = np.nonzero(mask)
        assert (
            len(xs)
            and xs.min() >= x0 - 1
            and xs.max() <= x1 + 1
            and ys.min() >= y0 - 1
            and ys.max() <= y1 + 1
        )
        assert (row["wli_evidence"] == "") == (patient.modality == "NBI")
        if patient.modality == "WLI":
            assert 0 <= row["wli_evidence"] <= 1
        assert cfg.min_distance <= row["distance"] <= cfg.max_distance
    assert n == len(patient.lesions) * cfg.frames_per_lesion


def test_truth_box_holds_the_pixels_the_lesion_changes():
    """Independent of the truth mask: render each lesion frame's pose again without the lesion
    (same noise, fixed exposure); where the picture changes is inside the truth box."""
    cfg = _cfg()
    pr = PatientRenderer(cfg, plan(cfg)[0])
    for slot in range(len(pr.p.lesions)):
        les = pr.placed(slot)
        for n in range(2):
            rng = np.random.default_rng([slot, n])
            cam = look_at_wall(rng, les.angle, les.z, 0.3 + 0.6 * n, 0.5625, out_of_view=0.0)
            a, truth = pr.tube.render(cam, [les], lambda luma: 1.0, np.random.default_rng(9))
            b, _ = pr.tube.render(cam, [], lambda luma: 1.0, np.random.default_rng(9))
            changed = np.abs(a.astype(int) - b.astype(int)).max(axis=2) > 6
            ys, xs = np.nonzero(changed)
            assert truth.lesion is not None and len(xs)
            x0, y0, x1, y1 = truth.box
            m = 0.1 * max(x1 - x0, y1 - y0) + 4  # the lesion's soft rim and the lens blur
            assert x0 - m <= xs.min() and xs.max() <= x1 + m and y0 - m <= ys.min() and ys.max() <= y1 + m


def test_lesion_contrast_is_what_the_lesion_changes_and_leaves_the_frame_alone():
    """truth.contrast (the lesion shaded away at the same pose) against an independent measure:
    the rendered frames with and without the lesion (same noise), luma difference over its
    pixels. It fades with distance, and asking for it does not change a single pixel."""
    cfg = _cfg()
    pr = PatientRenderer(cfg, plan(cfg)[0])
    luma = np.array([0.299, 0.587, 0.114])
    for slot in range(len(pr.p.lesions)):
        les, seen = pr.placed(slot), []
        for distance in (0.3, 0.9, 2.0, 4.0):
            cam = look_at_wall(np.random.default_rng([slot, 0]), les.angle, les.z, distance, 0.5625, out_of_view=0.0)
            a, truth = pr.tube.render(cam, [les], lambda luma: 1.0, np.random.default_rng(9), contrast=True)
            plain, untouched = pr.tube.render(cam, [les], lambda luma: 1.0, np.random.default_rng(9))
            bare, _ = pr.tube.render(cam, [], lambda luma: 1.0, np.random.default_rng(9))
            assert np.array_equal(a, plain) and untouched.contrast is None
            mask = cv2.resize(truth.mask.astype(np.uint8), a.shape[1::-1], interpolation=cv2.INTER_NEAREST) > 0
            independent = np.abs((a.astype(float) - bare.astype(float)) @ luma)[mask].mean()
            if independent > 0.5:   # below, the 8-bit rounding dominates the frame difference
                assert 0.7 * independent <= truth.contrast <= 1.6 * independent
            seen.append(truth.contrast)
        assert seen[1] > seen[2] > seen[3]   # farther: fewer and darker pixels changed less


def test_renderer_reports_no_lesion_when_it_is_out_of_the_field():
    cfg = _cfg()
    pr = PatientRenderer(cfg, plan(cfg)[0])
    les = pr.placed(0)
    rng = np.random.default_rng(0)
    # looking down the lumen, away from the lesion, 20 tube radii before it
    cam = down_the_lumen(rng, les.z - 20.0, -1.0)
    _, truth = pr.tube.render(cam, [les], lambda luma: 1.0, rng)
    assert truth.lesion is None and truth.coverage == 0 and truth.box is None and not truth.mask.any()


def test_frames_are_unpaired_and_labelled(dataset):
    rows = _rows(dataset)
    assert tuple(rows[0]) == FRAME_COLUMNS
    assert FRAME_COLUMNS[:6] == ("path", "lesion_id", "class", "modality", "view", "paired")
    mods: dict[str, set] = {}
    for key in ("lesion_id", "patient_id"):
        mods = {}
        for r in rows:
            mods.setdefault(r[key], set()).add(r["modality"])
        assert all(len(m) == 1 for m in mods.values()), key  # no lesion, no colon in both modalities
    assert all(r["paired"] == "0" for r in rows)
    for modality in ("WLI", "NBI"):
        mine = [r for r in rows if r["modality"] == modality]
        assert {r["class"] for r in mine} == {"hyperplastic", "adenoma", NO_LESION}
        assert sum(r["class"] == NO_LESION for r in mine) == 4
        assert len({r["lesion_id"] for r in mine if r["class"] != NO_LESION}) == 4  # 2 per class
    assert {p.relative_to(dataset.parent).as_posix() for p in dataset.parent.rglob("*.png")} == {
        r["path"] for r in rows
    }


def test_same_bytes_whatever_the_worker_count(tmp_path, dataset):
    other = generate_frames(_cfg(tmp_path, workers=2), progress=False)
    assert other.read_bytes() == dataset.read_bytes()
    for r in _rows(dataset):
        assert (other.parent / r["path"]).read_bytes() == (dataset.parent / r["path"]).read_bytes(), r["path"]


def test_manifest_loads_with_the_generic_layout_and_splits_do_not_leak(dataset):
    samples = read_manifest(dataset)
    assert len(samples) == len(_rows(dataset))
    assert class_list(samples, ["hyperplastic", "adenoma"], dataset.parent) == ["hyperplastic", "adenoma"]
    assert NO_LESION in class_list(samples, ["hyperplastic", "adenoma", NO_LESION], dataset.parent)
    assert all(Path(s.path).is_file() for s in samples)
    folds = make_folds(samples, k=2, val_fraction=0.2, seed=0)
    for fold in folds["folds"]:
        test = set(fold["test"])
        train = set(fold["train"]) | set(fold["val"])
        # one colon (its lesions and its no-lesion segments) never sits on both sides
        assert not test & train
        lesions_test = {s.lesion for s in samples if s.patient in test}
        assert not lesions_test & {s.lesion for s in samples if s.patient in train}


@pytest.mark.parametrize("border", ["octagon", "round"])
def test_crop_matches_the_runtimes_content_area_detector(border):
    """The generator cuts the content area from its known field mask; the runtime detects it
    from the pixels (stream/preprocess.py). The detector's box moves a little with the picture
    (a dark lumen at the field's edge reads as border), within what its tracker treats as the
    same box (3% of the frame); over a few rendered 720p frames it is ours within a few px."""
    from stream.preprocess import ContentArea, ContentTracker, detect_content_area

    cfg = FrameConfig(render_scale=0.25, border=border, lesions_per_class=1)
    pr = PatientRenderer(cfg, plan(cfg)[0])
    rng = np.random.default_rng(1)
    ours = content_box(720, 1280, border)
    found = []
    for k in range(6):
        cam = (
            down_the_lumen(rng, 3.0 * k, 1.0)
            if k % 2
            else look_at_wall(rng, rng.uniform(-3, 3), 3.0 * k, 0.8, 0.5625)
        )
        frame, _ = pr.tube.render(cam, [], lambda luma: 0.42 / luma, rng, border=border, text=["SYNTHETIC"])
        area = detect_content_area(frame)
        assert area is not None and area.close_to(
            ContentArea(ours, "", 1.0), ContentTracker().tolerance * 1280
        )
        found.append(area.box)
    median = np.median(np.array(found), axis=0)
    assert np.abs(median - np.array(ours)).max() <= 4, (found, ours)


def test_lesion_ids_are_seeded_and_unique():
    cfg = _cfg(lesions_per_class=3, classes=["hyperplastic", "adenoma", "adenocarcinoma"])
    ids = [lesion_id(cfg, i) for p in plan(cfg) for i, _ in p.lesions]
    assert len(ids) == len(set(ids)) == 3 * 3 * 2


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--frames-per-lesion", "0"], "frames-per-lesion"),
        (["--no-lesion-frames", "-1"], "no-lesion-frames"),
        (["--size", "8"], "--size"),
        (["--classes", "adenoma"], "two different classes"),
    ],
)
def test_bad_arguments_give_one_line(tmp_path, capsys, argv, words):
    assert main(["frames", "--out", str(tmp_path / "x"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err and "Traceback" not in err
