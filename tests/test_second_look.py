"""benchmarks.second_look: the crops it reads a lesion from, and the command on a real video.

The video is test_video_eval's toy procedure (three lesions, truth boxes), its truth given a
coverage column; the student is the bundled one (it has the no_lesion output the map needs).
"""
from __future__ import annotations

import csv
import json
import shutil
from argparse import Namespace

import numpy as np
import pytest
import torch
from test_video_eval import video  # noqa: F401 - the toy procedure video fixture, reused

from benchmarks.second_look import LOOKS, READS, crop_side, lesion_map, main, map_centre, square
from pagkd_core.student import load_student
from stream.config import bundled_model


def test_a_crop_is_a_square_moved_inside_the_content_area():
    area = (100, 0, 820, 720)
    assert square(460, 360, 360, area) == (280, 180, 640, 540)         # centred
    assert square(110, 10, 360, area) == (100, 0, 460, 360)            # moved in from a corner, not shrunk
    assert square(800, 700, 360, area) == (460, 360, 820, 720)
    assert square(460, 360, 2000, area) == (100, 0, 820, 720)          # never larger than the area
    # its side: a share of the area's height, or ZOOM x the lesion's where that is more
    assert crop_side(Namespace(side=0.5, zoom=0), area, 200) == 360
    assert crop_side(Namespace(side=0.5, zoom=2.5), area, 200) == 500
    assert crop_side(Namespace(side=0.5, zoom=2.5), area, 100) == 360
    assert crop_side(Namespace(side=0.5, zoom=2.5), area, 400) == 720


def test_the_map_points_at_the_cell_most_sure_of_a_lesion():
    model, _ = load_student(bundled_model())
    features = torch.zeros(1, model.channels, 16, 16)
    # one cell lit along the direction that raises the lesion classes over no_lesion
    w = model.head.weight.detach()
    features[0, :, 3, 12] = 5 * (w[1] + w[2] - 2 * w[0])
    cells = lesion_map(model, features, background=0)
    assert cells.shape == (16, 16) and int(cells.argmax()) == 3 * 16 + 12
    x, y = map_centre(cells, (100, 0, 420, 320))                      # 20 px per cell
    assert (x, y) == pytest.approx((100 + 12.5 * 20, 3.5 * 20))


def test_the_command_reads_every_lesion_frame_three_ways(video, tmp_path, capsys):  # noqa: F811
    # the toy video in a folder of its own, its truth with a coverage column (10% on lesion frames)
    src_truth = video.with_name(video.stem + ".truth.csv")
    shutil.copy(video, tmp_path / video.name)
    with open(src_truth, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(tmp_path / src_truth.name, "w", newline="") as f:
        w = csv.DictWriter(f, [*rows[0], "coverage"])
        w.writeheader()
        w.writerows({**r, "coverage": 0.1 if r["lesion_visible"] == "1" else 0.0} for r in rows)
    lesion_frames = sum(r["lesion_visible"] == "1" for r in rows)

    assert main(["--videos", str(tmp_path), "--every", "4", "--resamples", "20", "-q",
                 "--out", str(tmp_path / "look.md"), "--json", str(tmp_path / "look.json")]) == 0
    rep = json.loads((tmp_path / "look.json").read_text())
    by_bin = {b["bin"]: b for b in rep["bins"]}
    scored = sum(1 for i, r in enumerate(rows) if r["lesion_visible"] == "1" and i % 4 == 0)
    assert 0 < scored < lesion_frames and by_bin["10-15%"]["frames"] == scored
    assert by_bin["10-15%"]["lesions"] == 3 and sum(b["frames"] for b in rep["bins"]) == scored
    b = by_bin["10-15%"]
    assert all(0 <= b[k] <= 1 for k in READS)                           # two classes among the lesions
    for k in LOOKS:
        assert np.isfinite(b[f"{k} - full"]["diff"]) and 0 <= b[f"{k} holds the lesion"] <= 1
    assert b["at centre holds the lesion"] == 1.0                       # the truth box is the whole frame
    assert "class AUC at map" in (tmp_path / "look.md").read_text()

    # bad input: one line
    assert main(["--videos", str(tmp_path), "--side", "1.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("second_look: ") and "--side" in err and "\n" not in err
