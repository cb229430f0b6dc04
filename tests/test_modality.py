"""The WLI/NBI detector on a switch made of rendered procedure frames, and the routing of NBI
frames: never to the WLI student; to the NBI teacher exported beside it, or "NBI: not analysed"."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from pagkd_core.export import export_student
from pagkd_core.models import build_model
from pagkd_core.outputs import NO_LESION
from pagkd_core.student import teacher_stem
from stream.alerts import NBI_NOT_ANALYSED, NO_LESION_STATE
from stream.frame import Frame
from stream.modality import NBI, WLI, ModalityDetector, red_excess
from stream.pipeline import Pipeline, PipelineConfig
from stream.preprocess import ContentTracker
from stream.sinks import Annotation, draw_overlay, read_predictions
from stream.smoothing import SmoothingConfig
from stream.sources import Source, SourceInfo

STRETCH = 15  # frames per stretch: WLI, NBI, WLI


@pytest.fixture(scope="module")
def switch_clip() -> tuple[list[np.ndarray], list[str]]:
    """WLI -> NBI -> WLI: frames of three rendered procedure clips (synthetic), back to back."""
    from pagkd_core.synth.config import VideoConfig
    from pagkd_core.synth.video import iter_procedure_frames

    frames, truth = [], []
    for modality, seed in ((WLI, 1), (NBI, 2), (WLI, 3)):
        cfg = VideoConfig(width=192, height=108, fps=10, seconds=STRETCH / 10, seed=seed, modality=modality)
        for rgb, _ in iter_procedure_frames(cfg):
            frames.append(rgb)
            truth.append(modality)
    assert len(frames) == 3 * STRETCH
    return frames, truth


def test_detector_on_a_wli_nbi_wli_switch(switch_clip):
    frames, truth = switch_clip
    det, tracker = ModalityDetector(), ContentTracker()
    calls = [det.update(f, tracker.update(f).box) for f in (Frame(i, i / 10, 0.0, rgb) for i, rgb in enumerate(frames))]
    assert det.switches == 2  # one in, one out: no flicker
    held = [c.held for c in calls]
    assert held[:STRETCH] == [WLI] * STRETCH and held[-1] == WLI
    # Every NBI frame is handled as NBI from its first frame on (kept from the WLI student); only
    # the confirm-1 WLI frames after the switch back wait for the confirmation.
    handled = [c.modality for c in calls]
    wrong = [i for i, (h, t) in enumerate(zip(handled, truth)) if h != t]
    assert wrong == list(range(2 * STRETCH, 2 * STRETCH + det.confirm - 1))
    assert all(h == NBI for h, t in zip(handled, truth) if t == NBI)
    # the score separates the two lights with a margin on these frames
    scores = np.array([c.score for c in calls])
    is_nbi = np.array(truth) == NBI
    assert scores[is_nbi].max() < det.nbi_below < det.wli_above < scores[~is_nbi].min()


def test_detector_edge_cases():
    assert red_excess(np.zeros((20, 20, 3), np.uint8)) is None  # black: says nothing
    det = ModalityDetector(confirm=2)
    assert det.update_score(None).modality == WLI  # before any readable frame: WLI
    assert det.update_score(-0.02).held == NBI  # the first readable frame decides at once
    assert det.update_score(0.05).held == NBI  # between the thresholds: no vote
    one = det.update_score(0.15)
    assert one.held == NBI and one.modality == NBI  # one WLI frame is not a switch yet
    assert det.update_score(0.15).held == WLI and det.switches == 1
    with pytest.raises(ValueError, match="nbi_below"):
        ModalityDetector(nbi_below=0.1, wli_above=0.05)


class ListSource(Source):
    """Pictures from a list, as a replayed file would give them."""

    def __init__(self, frames: list[np.ndarray], fps: float = 10.0):
        h, w = frames[0].shape[:2]
        super().__init__(SourceInfo(name="switch", kind="file", width=w, height=h, fps=fps, frames=len(frames)))
        self._frames = frames

    def frames(self):
        for i, rgb in enumerate(self._frames):
            self.counters["frames"] += 1
            yield Frame(i, i / self.info.fps, 0.0, rgb)


@pytest.fixture(scope="module")
def student_and_teacher(tmp_path_factory):
    """A tiny random no_lesion student and, in another folder, the same student with an NBI
    teacher exported beside it (two lesion classes, no background)."""
    torch.manual_seed(0)
    names = [NO_LESION, "hyperplastic", "adenoma"]
    alone = tmp_path_factory.mktemp("alone") / "student"
    paired = tmp_path_factory.mktemp("paired") / "student"
    model = build_model("test_resnet", 3, embed_dim=8)
    for stem in (alone, paired):
        export_student(model, stem, class_names=names, input_size=32, onnx=False)
    export_student(build_model("test_resnet", 2, embed_dim=8), teacher_stem(paired),
                   class_names=names[1:], input_size=32, onnx=False, modality="NBI")
    return alone.with_suffix(".json"), paired.with_suffix(".json")


def count_rows(engine) -> list[int]:
    """Wrap ``engine.infer`` to record how many frames each call got."""
    rows, infer = [], engine.infer

    def counted(batch):
        rows.append(int(batch.shape[0]))
        return infer(batch)

    engine.infer = counted
    return rows


def run_switch(model, frames, tmp_path, **cfg):
    cfg = PipelineConfig(model=str(model), engine="torch", device="cpu", threads=1, batch=4,
                         predictions=str(tmp_path / "pred.jsonl"), smoothing=SmoothingConfig("none"), **cfg)
    pipe = Pipeline(cfg)
    counts = {lane.name: count_rows(lane.engine) for lane in pipe.router.lanes}
    pipe.add_stream(ListSource(frames))
    pipe.run(timeout=120)
    assert not pipe.errors()
    rows = read_predictions(cfg.predictions)
    # in frame order, whichever model read them: an NBI frame never overtakes the WLI frames
    # still in the student's batch
    assert [r["frame"] for r in rows] == list(range(len(frames)))
    modality = [r["modality"] for r in rows]
    assert sum(a != b for a, b in itertools.pairwise(modality)) == 2  # into NBI and back, once each
    return pipe, counts, rows


def test_nbi_frames_never_reach_the_student(switch_clip, student_and_teacher, tmp_path):
    frames, truth = switch_clip
    alone, _ = student_and_teacher
    pipe, counts, rows = run_switch(alone, frames, tmp_path)
    assert pipe.router.teacher is None and len(rows) == len(frames)
    read = [r for r in rows if r["model"] == "student"]
    assert sum(counts["student"]) == len(read)  # the engine saw exactly these frames ...
    assert {truth[r["frame"]] for r in read} == {WLI}  # ... and all of them are WLI
    for r in rows:
        if truth[r["frame"]] == NBI:
            assert (r["modality"], r["state"], r["probs"], r["alert"]) == (NBI, NBI_NOT_ANALYSED, None, False)
    assert sum(r["modality"] == truth[r["frame"]] for r in rows) >= len(rows) - 2  # confirm-1 lag, once
    assert rows[0]["classes"] == [NO_LESION, "hyperplastic", "adenoma"]


def test_nbi_frames_go_to_the_teacher_exported_beside_the_student(switch_clip, student_and_teacher, tmp_path):
    frames, truth = switch_clip
    _, paired = student_and_teacher
    pipe, counts, rows = run_switch(paired, frames, tmp_path)
    assert pipe.router.teacher is not None  # found beside the student, loaded without a flag
    by_model = {m: [r for r in rows if r["model"] == m] for m in ("student", "nbi_teacher")}
    assert sum(counts["student"]) == len(by_model["student"])
    assert sum(counts["nbi_teacher"]) == len(by_model["nbi_teacher"]) >= STRETCH
    assert {truth[r["frame"]] for r in by_model["student"]} == {WLI}
    assert all(truth[r["frame"]] == NBI for r in by_model["nbi_teacher"][:STRETCH])
    for r in by_model["nbi_teacher"]:
        # the teacher's two classes land at their names in the student's list; it has no background
        assert r["modality"] == NBI and len(r["probs"]) == 3 and r["probs"][0] == 0.0
        assert np.isclose(sum(r["probs"]), 1.0, atol=1e-4) and r["state"] != NBI_NOT_ANALYSED
    # "none" turns the teacher off: NBI frames are then not analysed
    pipe, counts, rows = run_switch(paired, frames, tmp_path, nbi_teacher="none")
    assert pipe.router.teacher is None and "nbi_teacher" not in counts
    assert {r["state"] for r in rows if truth[r["frame"]] == NBI} == {NBI_NOT_ANALYSED}


def test_overlay_says_no_lesion_quietly_and_nbi_not_analysed():
    rgb = np.full((240, 320, 3), 90, np.uint8)
    names = [NO_LESION, "hyperplastic", "adenoma"]

    def drawn(ann):
        return (draw_overlay(rgb, ann) != rgb).any(axis=2)

    quiet = drawn(Annotation(NO_LESION_STATE, False, 0.9, [0.9, 0.05, 0.05], names))
    call = drawn(Annotation("adenoma", True, 0.9, [0.1, 0.1, 0.8], names))
    nbi = drawn(Annotation(NBI_NOT_ANALYSED, False, 0.0, None, names, modality=NBI))
    top = slice(0, 80)  # the call is written top right; bars and border are elsewhere
    assert 0 < quiet[top, 160:].sum() < call[top, 160:].sum() / 2  # small and without a number
    assert nbi[top].any() and not nbi[160:].any()  # no bars: no model read the frame


def test_a_teacher_that_cannot_serve_is_left_out_with_one_line(tmp_path):
    from stream.engines import build_engine
    from stream.routing import ModalityRouter

    torch.manual_seed(0)
    export_student(build_model("test_resnet", 3, embed_dim=8), tmp_path / "s",
                   class_names=[NO_LESION, "hyperplastic", "adenoma"], input_size=32, onnx=False)
    export_student(build_model("test_resnet", 2, embed_dim=8), teacher_stem(tmp_path / "s"),
                   class_names=["adenoma", "adenocarcinoma"], input_size=32, onnx=False, modality="NBI")
    engine = build_engine("torch", tmp_path / "s.json", device="cpu", max_batch=2, threads=1)
    cfg = PipelineConfig(engine="torch", device="cpu", threads=1)
    with pytest.warns(RuntimeWarning, match=r"NBI teacher not used .*s\.nbi\.json.*adenocarcinoma"):
        router = ModalityRouter(cfg, engine)
    assert router.teacher is None  # NBI frames are then not analysed; the session goes on
    cfg.detect_modality = False
    assert ModalityRouter(cfg, engine).teacher is None  # no detection: no teacher loaded at all
