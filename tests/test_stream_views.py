"""The student's views of a frame (stream.views): their boxes, their fusion, and a pipeline that
reads two views per frame on a real video and logs the fused probabilities."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from stream_media import write_video

from pagkd_core.student import read_meta
from stream.config import load_pipeline_config
from stream.frame import Frame
from stream.pipeline import Pipeline, PipelineConfig
from stream.preprocess import Preprocessor
from stream.result import softmax
from stream.sinks import read_predictions
from stream.views import CENTRE, WHOLE, fuse, parse_views, view_box

NAMES = ["no_lesion", "hyperplastic", "adenoma"]


def test_parse_views_takes_the_whole_view_first_and_says_what_is_wrong():
    assert parse_views("whole") == (WHOLE,)
    assert parse_views(" whole, centre ") == (WHOLE, CENTRE)
    assert parse_views(["whole", "centre"]) == (WHOLE, CENTRE)
    for bad in ("", "centre", "whole,whole", "whole,zoom", "centre,whole"):
        with pytest.raises(ValueError, match="views"):
            parse_views(bad)


def test_centre_view_is_the_content_areas_central_square():
    assert view_box(WHOLE, (16, 8, 1264, 712)) == (16, 8, 1264, 712)
    assert view_box(CENTRE, (16, 8, 1264, 712)) == (288, 8, 992, 712)  # 704 x 704 in the middle
    assert view_box(CENTRE, (0, 0, 100, 300)) == (0, 100, 100, 200)  # a tall area: the middle rows
    assert view_box(CENTRE, (5, 5, 69, 69)) == (5, 5, 69, 69)  # already square: the same pixels
    with pytest.raises(ValueError, match="unknown view"):
        view_box("zoom", (0, 0, 10, 10))


def test_fusion_keeps_presence_of_the_surer_view_and_averages_the_class_split():
    whole = np.array([0.2, 0.6, 0.2])  # lesion there, split 3:1 for hyperplastic
    centre = np.array([0.9, 0.025, 0.075])  # centre sees little lesion, split 1:3
    p = fuse(np.stack([whole, centre]), NAMES)
    assert p.dtype == np.float32 and p.sum() == pytest.approx(1, abs=1e-6)
    assert p[0] == pytest.approx(0.2)  # presence: the surer view's (here the whole one)
    assert fuse(np.stack([centre, whole]), NAMES)[0] == pytest.approx(0.2)  # whichever view that is
    assert p[1] == pytest.approx(p[2])  # 3:1 and 1:3 average (geometric) to even odds
    # one view: unchanged
    np.testing.assert_allclose(fuse(whole[None], NAMES), whole, rtol=1e-6)
    # a student without no_lesion: the class split alone
    two = fuse(np.array([[0.75, 0.25], [0.25, 0.75]]), ["hyperplastic", "adenoma"])
    np.testing.assert_allclose(two, [0.5, 0.5], atol=1e-6)


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    from pagkd_core.export import export_student
    from pagkd_core.models import build_model

    torch.manual_seed(0)
    stem = tmp_path_factory.mktemp("model") / "tiny3"
    export_student(build_model("resnet10t", 3, embed_dim=16), stem, class_names=NAMES, input_size=64, onnx=False)
    return stem.with_suffix(".json")


def test_pipeline_reads_both_views_in_one_engine_call_and_logs_their_fusion(student, tmp_path):
    from stream.engines import build_engine

    engine = build_engine("torch", student, device="cpu", max_batch=8, threads=1)
    calls = []
    infer = engine.infer
    engine.infer = lambda batch: calls.append(len(batch)) or infer(batch)
    path = write_video(tmp_path / "wide.mp4", n=12, w=192, h=96)
    log = tmp_path / "pred.jsonl"
    cfg = PipelineConfig(predictions=str(log), views="whole,centre", detect_area=False, batch=4)
    pipe = Pipeline(cfg, engine=engine)
    pipe.add_stream(str(path))
    pipe.run(timeout=60)
    assert not pipe.errors()
    recs = read_predictions(str(log))
    assert [r["frame"] for r in recs] == list(range(12))
    assert all(n % 2 == 0 for n in calls)  # a frame's two views always share an engine call
    # The logged probabilities are the fusion of the engine's reads of each view.
    meta = engine.source.meta
    pre = Preprocessor(engine.input_size, meta["mean"], meta["std"], detect=False)
    frames = [Frame(i, i / 30, 0.0, picture=f) for i, f in enumerate(av.open(str(path)).decode(video=0))]
    area = (0, 0, 192, 96)
    for f, rec in zip(frames, recs):
        x = np.stack([pre(f, view_box(v, area), view=v) for v in (WHOLE, CENTRE)])
        ref = fuse(np.stack([softmax(z) for z in engine.infer(x)]), NAMES)
        np.testing.assert_allclose(rec["probs"], ref, atol=1e-4)
        # each view's own softmax is logged beside the fusion, to weigh other fusions offline
        assert list(rec["view_probs"]) == [WHOLE, CENTRE]
        np.testing.assert_allclose(fuse(np.stack(list(rec["view_probs"].values())), NAMES), rec["probs"], atol=1e-4)
    engine.close()


def test_views_default_to_the_students_own_and_a_bad_setting_is_one_line(student, tmp_path):
    from stream.engines import build_engine
    from stream.lanes import student_views

    engine = build_engine("torch", student, device="cpu", max_batch=2, threads=1)
    assert student_views(PipelineConfig(), engine) == (WHOLE,)  # no "views" in its metadata
    engine.source.meta["views"] = ["whole", "centre"]
    assert student_views(PipelineConfig(), engine) == (WHOLE, CENTRE)
    assert student_views(PipelineConfig(views="whole"), engine) == (WHOLE,)
    with pytest.raises(ValueError, match="views"):
        Pipeline(PipelineConfig(views="centre"), engine=engine)
    engine.close()
    assert read_meta(student)[1].get("views") is None  # the file itself was not changed
    assert load_pipeline_config(None, {"views": "whole,centre"}).views == "whole,centre"
    from pagkd_core.config import ConfigError

    with pytest.raises(ConfigError, match="views"):  # before any engine is built
        load_pipeline_config(None, {"views": "centre"})


def test_presence_fusions_and_refusing_a_log(tmp_path):
    import json

    from benchmarks.view_fusion import refuse_log

    whole, centre = np.array([0.8, 0.1, 0.1]), np.array([0.2, 0.2, 0.6])
    views = np.stack([whole, centre])
    assert fuse(views, NAMES, "whole")[0] == pytest.approx(0.8)
    assert fuse(views, NAMES, "mean")[0] == pytest.approx(0.5)
    assert fuse(views, NAMES, "max")[0] == pytest.approx(0.2)  # the view surer a lesion is there
    with pytest.raises(ValueError, match="presence"):
        fuse(views, NAMES, "min")
    # weighted: a view that sees no lesion has little say on its class
    sure, empty = np.array([0.1, 0.675, 0.225]), np.array([0.99, 0.0025, 0.0075])  # 3:1 and 1:3
    w = fuse(np.stack([sure, empty]), NAMES, split="weighted")
    assert w[1] / w[2] == pytest.approx(3 ** ((0.9 - 0.01) / 0.91), rel=1e-3)  # near the sure view's 3:1
    assert fuse(np.stack([sure, empty]), NAMES, split="mean")[1] == pytest.approx(fuse(np.stack([sure, empty]), NAMES)[2])
    src, dst = tmp_path / "a.jsonl", tmp_path / "out" / "a.jsonl"
    lines = [{"frame": 0, "classes": NAMES, "probs": fuse(views, NAMES).tolist(),
              "view_probs": {"whole": whole.tolist(), "centre": centre.tolist()}},
             {"frame": 1, "classes": NAMES, "probs": None, "state": "NBI: not analysed"}]
    src.write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert refuse_log(src, dst, "mean") == 1
    out = [json.loads(x) for x in dst.read_text().splitlines()]
    assert out[0]["probs"][0] == pytest.approx(0.5) and out[1] == lines[1]


def test_the_evaluation_cache_keeps_each_views_probabilities(tmp_path):
    from stream.video_infer import Raw, read_log, write_log
    from stream.video_metrics import Truth

    whole, centre = [0.7, 0.2, 0.1], [0.4, 0.1, 0.5]
    probs = fuse(np.array([whole, centre]), NAMES).tolist()
    raw = Raw.empty(3, 3)
    raw.put({"frame": 0, "probs": probs, "view_probs": {"whole": whole, "centre": centre}, "modality": "WLI"})
    raw.put({"frame": 1, "probs": None, "state": "NBI: not analysed", "model": None, "modality": "NBI"})
    raw.put({"frame": 2, "probs": [0.9, 0.05, 0.05], "model": "nbi_teacher", "state": "no lesion", "modality": "NBI"})
    truth = Truth(np.arange(3), np.arange(3) / 30, np.zeros(3, bool), np.array([""] * 3, object), np.array([""] * 3, object))
    write_log(tmp_path / "v.jsonl", raw, truth, NAMES)
    again = read_log(tmp_path / "v.jsonl", 3, 3)
    np.testing.assert_allclose(again.views["whole"][0], whole, atol=1e-6)
    np.testing.assert_allclose(again.views["centre"][0], centre, atol=1e-6)
    np.testing.assert_allclose(again.probs[0], probs, atol=1e-6)
    assert not np.isfinite(again.views["whole"][1:]).any()  # frames the student did not read have none
    assert again.skipped[1:] == ["NBI: not analysed", "no lesion"]


def test_view_placement_splits_close_view_frames_by_where_the_lesion_sits(tmp_path, capsys):
    import json

    from benchmarks.view_placement import main as placement
    from benchmarks.view_placement import rows

    path = write_video(tmp_path / "v.mp4", n=8, w=192, h=96)  # detect_content_area finds the field
    header = ["frame", "pts", "lesion_visible", "lesion_id", "class", "x0", "y0", "x1", "y1", "modality", "coverage"]
    truth = []
    for i in range(8):  # frames 0-3: a lesion at the centre, 4-7: at the left edge; alternating classes
        x = 86 if i < 4 else 2
        truth.append([i, round(i / 30, 6), 1, "v-0", ("adenoma", "hyperplastic")[i % 2], x, 40, x + 20, 60, "WLI", 0.08])
    with open(tmp_path / "v.truth.csv", "w") as f:
        f.write("\n".join(",".join(map(str, r)) for r in [header, *truth]) + "\n")
    whole, centre = [0.1, 0.3, 0.6], [0.1, 0.6, 0.3]
    log = tmp_path / "preds" / "v.jsonl"
    log.parent.mkdir()
    log.write_text("".join(json.dumps({"frame": i, "classes": NAMES, "probs": whole,
                                       "view_probs": {"whole": whole, "centre": centre}}) + "\n" for i in range(8)))
    got = rows(path, log, 0.05)
    assert [r["inside"] for r in got] == [True] * 4 + [False] * 4
    assert [r["positive"] for r in got] == [True, False] * 4
    assert got[0]["whole view"] == pytest.approx(2 / 3) and got[0]["fused (mean split)"] == pytest.approx(0.5)
    assert placement([str(path), "--predictions-dir", str(log.parent)]) == 0
    assert "| inside the central square | 4 |" in capsys.readouterr().out
    assert placement([str(path), "--predictions-dir", str(tmp_path)]) == 2  # no logs there: one line
