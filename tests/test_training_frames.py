"""python -m stream frames: training frames cut from a real H.264 video through the runtime's own
decoder and preprocessing, labelled per view from the video's truth; and a fine-tune that
continues an exported student (model.pretrained_head)."""

from __future__ import annotations

import csv
import json
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
import torch

from pagkd_core.config import Config, ConfigError, ModelConfig, validate
from pagkd_core.models import model_from_config
from pagkd_core.student import load_student_head
from stream.config import bundled_model
from stream.preprocess import ContentArea
from stream.training_frames import main, view_label
from stream.video_metrics import Truth
from stream.views import view_box

W, H, SIDE = 320, 180, 24  # a 16:9 field; the centre view is its central 180 x 180 square
# (frames, the square's left edge or None, class, modality): the lesion at the field's left edge
# (outside the centre square), cut by the square's edge, well inside it, then a stretch in NBI
RUNS = [(12, None, "", "WLI"), (12, 20, "adenoma", "WLI"), (12, 52, "adenoma", "WLI"),
        (12, 150, "hyperplastic", "WLI"), (12, 150, "hyperplastic", "NBI")]


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_videos")
    path, rows, f = root / "proc_s1.mp4", [], 0
    with av.open(str(path), "w") as box:
        s = box.add_stream("libx264", rate=Fraction(30, 1))
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.options = {"crf": "12", "g": "15"}
        for n, left, cls, modality in RUNS:
            for _ in range(n):
                rgb = np.empty((H, W, 3), np.uint8)
                rgb[:] = (200, 120, 110)                        # pink mucosa, the whole frame bright
                if left is not None:
                    rgb[80:80 + SIDE, left:left + SIDE] = (40, 220, 40)
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts, frame.time_base = f, Fraction(1, 30)
                box.mux(s.encode(frame))
                lid = f"L{left}" if left is not None else ""
                lbox = [left, 80, left + SIDE - 1, 80 + SIDE - 1] if left is not None else [""] * 4
                cov = SIDE * SIDE / (W * H) if left is not None else 0.0
                rows.append([f, round(f / 30, 6), int(left is not None), lid, cls, *lbox, modality, cov, 0.4, 9.0])
                f += 1
        box.mux(s.encode())
    with open(root / "proc_s1.truth.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["frame", "pts", "lesion_visible", "lesion_id", "class", "x0", "y0", "x1", "y1", "modality",
                    "coverage", "wli_evidence", "lesion_contrast"])
        w.writerows(rows)
    return path


def _manifest(out):
    with open(out / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_each_view_is_labelled_from_the_truth(video, tmp_path):
    out = tmp_path / "frames"
    assert main([str(video.parent), "--out", str(out), "--size", "64", "--every", "3", "--views", "whole,centre",
                 "--no-progress"]) == 0
    rows = _manifest(out)
    by = {(int(r["view"]), r["path"].rsplit("_", 1)[1][:-4]): r for r in rows}
    wli = [i for i in range(48) if i % 3 == 0]
    assert {i for i, _ in by} == set(wli)                               # NBI frames (48-59) left out
    for i in wli:
        run = RUNS[i // 12]
        assert by[i, "whole"]["class"] == (run[2] or "no_lesion")       # the whole view: the truth's label
        centre = {None: "no_lesion", 20: "no_lesion", 52: None, 150: run[2]}[run[1]]
        if centre is None:
            assert (i, "centre") not in by                              # cut by the square's edge: left out
        else:
            assert by[i, "centre"]["class"] == centre
    r = by[36, "centre"]
    assert r["lesion_id"] == "proc_s1-L150" and r["patient_id"] == "proc_s1"
    # coverage in the square: the field's 320 x 180 (a rectangle: fill 1) over the square's 180 x 180
    assert float(r["coverage"]) == pytest.approx(SIDE * SIDE / (H * H), rel=1e-3)
    assert r["wli_evidence"] == "0.4" and r["lesion_contrast"] == "9"
    assert json.loads((out / "frames_config.json").read_text())["views"] == ["whole", "centre"]


def test_the_saved_pixels_are_the_views_and_the_box_is_where_the_lesion_shows(video, tmp_path):
    out = tmp_path / "frames"
    assert main([str(video), "--out", str(out), "--size", "64", "--every", "3", "--views", "whole,centre",
                 "--no-progress"]) == 0
    for r in _manifest(out):
        if r["class"] in ("no_lesion", ""):
            continue
        img = cv2.cvtColor(cv2.imread(str(out / r["path"])), cv2.COLOR_BGR2RGB)
        assert img.shape == (64, 64, 3)
        x0, y0, x1, y1 = (int(r[k]) for k in ("x0", "y0", "x1", "y1"))
        green = img[..., 1].astype(int) - img[..., 0]
        inside, outside = green[y0 + 1:y1, x0 + 1:x1], green.copy()
        outside[max(0, y0 - 2):y1 + 3, max(0, x0 - 2):x1 + 3] = -999
        assert inside.min() > 100 and outside.max() < 0                # the lesion, and only there


def test_a_lesion_half_in_the_centre_square_is_neither_label():
    truth = Truth(frame=np.arange(1), pts=np.zeros(1), visible=np.array([True]), lesion_id=np.array(["a"]),
                  cls=np.array(["adenoma"]), coverage=np.array([0.01]), box=np.array([[60.0, 80, 99, 119]]))
    area = ContentArea((0, 0, 320, 180), "octagon", 0.9)
    centre = view_box("centre", area.box)                               # (70, 0, 250, 180)
    assert view_label(truth, 0, "p", area, area.box, 64).coverage == pytest.approx(0.01)
    label = view_label(truth, 0, "p", area, centre, 64)                 # 30 of 40 columns inside
    assert label.cls == "adenoma"
    # the lesion's share of the square: of the field's pixels (box x fill) over the square's
    assert label.coverage == pytest.approx(0.01 * 320 * 180 * 0.9 / (180 * 180) * 0.75)
    truth.box[0] = [40, 80, 79, 119]                                    # 10 of 40 inside
    assert view_label(truth, 0, "p", area, centre, 64) is None
    truth.box[0], truth.coverage[0] = np.nan, np.nan                    # the truth gives no box, no coverage
    assert view_label(truth, 0, "p", area, centre, 64) is None          # a crop cannot tell where it is
    assert np.isnan(view_label(truth, 0, "p", area, area.box, 64).coverage)   # unknown, never 1.0


def test_bad_input_is_one_line(video, tmp_path, capsys):
    assert main([str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no videos with a <video>.truth.csv" in capsys.readouterr().err
    lone = tmp_path / "lone.mp4"
    lone.write_bytes(video.read_bytes())
    assert main([str(lone), "--out", str(tmp_path / "o")]) == 2
    assert "no truth beside it" in capsys.readouterr().err
    out = tmp_path / "twice"
    assert main([str(video), "--out", str(out), "--size", "64", "--no-progress"]) == 0
    assert main([str(video), "--out", str(out), "--size", "64", "--no-progress"]) == 2   # nothing overwritten
    assert "already holds a frame set" in capsys.readouterr().err
    assert main([str(video), "--out", str(tmp_path / "v"), "--views", "centre"]) == 2
    assert "views start with 'whole'" in capsys.readouterr().err
    short = tmp_path / "short" / "proc.mp4"                             # a truth one row short of the video
    short.parent.mkdir()
    short.write_bytes(video.read_bytes())
    lines = video.with_name("proc_s1.truth.csv").read_text().splitlines()
    short.with_name("proc.truth.csv").write_text("\n".join(lines[:-1]) + "\n")
    assert main([str(short), "--out", str(tmp_path / "s"), "--size", "64", "--no-progress"]) == 2
    assert "decoded 60 frames, its truth has 59 rows" in capsys.readouterr().err
    assert not (tmp_path / "s" / "manifest.csv").exists()


def test_a_fine_tune_can_continue_an_exported_student():
    student = bundled_model()
    meta = json.loads(student.read_text())
    weights_path = student.with_suffix(".safetensors")
    spec = ModelConfig(backbone=meta["backbone"], pretrained=str(weights_path),
                       output_stride=meta["output_stride"], pretrained_head=True)
    from safetensors.torch import load_file

    weights = load_file(str(weights_path))
    model = model_from_config(spec, meta["class_names"], meta["embed_dim"])   # the backbone alone
    assert not torch.equal(model.head.weight, weights["head.weight"].float())
    load_student_head(model, weights_path, meta["class_names"])              # what training does with the flag
    assert torch.equal(model.head.weight, weights["head.weight"].float())
    assert torch.equal(model.proj.weight, weights["proj.weight"].float())
    with pytest.raises(ValueError, match="has class_names"):
        load_student_head(model, weights_path, ["no_lesion", "adenoma", "hyperplastic"])
    cfg = Config()
    cfg.student.pretrained, cfg.student.pretrained_head = "timm:resnet18.a1_in1k", True
    with pytest.raises(ConfigError, match="pretrained_head needs"):
        validate(cfg)
