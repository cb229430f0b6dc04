"""Trainer: gradients reach the student (and distiller) but never the frozen teacher; resume
reproduces the uninterrupted run; same seed, same weights; input errors are one line."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from test_core_fixtures import TINY, exported_student, make_generic

from pagkd_core.cli import main as cli_main
from pagkd_core.config import load_config, stage_dir
from pagkd_core.distill import build_distiller
from pagkd_core.models import build_model
from pagkd_core.train import StudentObjective, loss_weights, train_stage


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_generic(tmp_path_factory.mktemp("core_train") / "data")


def tiny_cfg(root, out, *extra):
    return load_config(None, [*TINY, f"data.root={root}", f"run.out_dir={out}", *extra])


def test_gradient_reaches_student_and_distiller_not_teacher():
    torch.manual_seed(0)
    cfg = load_config(None, ["distill.method=pro+den", "distill.n_queries=4", "distill.par_iters=2"])
    student, teacher = build_model("resnet10t", 2), build_model("resnet10t", 2)
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    distiller = build_distiller(cfg.distill, 2, student.channels, teacher.channels)
    obj = StudentObjective(student, teacher, distiller).train()
    assert not teacher.training, "the frozen teacher stays in eval mode (BatchNorm statistics fixed)"
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 0, 1, 1])
    losses = obj(x, torch.randn(4, 3, 64, 64), y, True)
    assert set(losses) == {"ce", "pro", "den"}
    for name in ("pro", "den"):  # each distillation loss alone reaches the student's backbone
        student.zero_grad()
        losses[name].backward(retain_graph=True)
        assert student.backbone.conv1[0].weight.grad.abs().sum() > 0, name
        assert student.proj.weight.grad.abs().sum() > 0, name
    sum(loss_weights(cfg)[k] * v for k, v in losses.items()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in distiller.parameters())
    opt = torch.optim.Adam([p for p in obj.parameters() if p.requires_grad], lr=1e-2)
    opt.step()
    assert all(torch.equal(teacher.state_dict()[k], v) for k, v in teacher_before.items())
    # warm-up: distillation off -> CE only, the teacher is not even run
    assert set(obj(x, x, y, False)) == {"ce"}


def _weights(path):
    return {k: v for k, v in load_file(str(path)).items() if k.startswith(("model.", "distiller."))}


def test_teacher_student_resume_and_determinism(dataset, tmp_path):
    cfg = tiny_cfg(dataset, tmp_path / "a")
    best = train_stage(cfg, "teacher")
    assert best["epoch"] == 1 and (stage_dir(cfg, "teacher") / "best.safetensors").is_file()
    # full run: 2 student epochs
    train_stage(cfg, "student")
    full = _weights(stage_dir(cfg, "student") / "last.safetensors")
    hist_full = json.loads((stage_dir(cfg, "student") / "last.json").read_text())["history"]
    # killed after epoch 1, then resumed with --resume
    cfg_b = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, out_dir=str(tmp_path / "b")))
    (tmp_path / "b" / "fold0").mkdir(parents=True)
    (tmp_path / "b" / "splits.json").write_text((tmp_path / "a" / "splits.json").read_text())
    import shutil

    shutil.copytree(stage_dir(cfg, "teacher"), stage_dir(cfg_b, "teacher"))
    import pagkd_core.train as T

    real_save = T.save_checkpoint

    def save_then_die(*a, **k):
        real_save(*a, **k)
        raise KeyboardInterrupt  # killed right after epoch 1's checkpoint

    T.save_checkpoint = save_then_die
    try:
        with pytest.raises(KeyboardInterrupt):
            train_stage(cfg_b, "student")
    finally:
        T.save_checkpoint = real_save
    with pytest.raises(FileExistsError, match="--resume"):
        train_stage(cfg_b, "student")
    with pytest.raises(ValueError, match="config differs"):
        train_stage(
            dataclasses.replace(cfg_b, optim=dataclasses.replace(cfg_b.optim, lr=0.5)), "student", resume=True
        )
    train_stage(cfg_b, "student", resume=True)
    resumed = _weights(stage_dir(cfg_b, "student") / "last.safetensors")
    hist_b = json.loads((stage_dir(cfg_b, "student") / "last.json").read_text())["history"]
    assert [h["train"] for h in hist_b] == [h["train"] for h in hist_full]
    assert full.keys() == resumed.keys() and all(torch.equal(full[k], resumed[k]) for k in full), (
        "resume must reproduce the uninterrupted run exactly (same seed, CPU)"
    )


def test_wli_only_and_true_pairing_methods(dataset, tmp_path):
    cfg = tiny_cfg(dataset, tmp_path, "distill.method=none", "optim.epochs=1")
    assert train_stage(cfg, "student")["epoch"] == 1  # no teacher needed
    with pytest.raises(FileNotFoundError, match="teacher checkpoint not found.*train-teacher"):
        train_stage(tiny_cfg(dataset, tmp_path / "x", "distill.method=kd", "optim.epochs=1"), "student")


def test_cli_errors_are_one_line(dataset, tmp_path, capsys):
    assert cli_main(["train", "--set", "optim.epochs=abc"]) == 2
    assert capsys.readouterr().err.strip() == "error: optim.epochs: cannot read 'abc' as int"
    assert cli_main(["train", "--set", f"data.root={tmp_path / 'none'}", "--set", "distill.method=none"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: data root not found") and "\n" not in err
    assert cli_main(["export", "--set", f"run.out_dir={tmp_path}", "--out", str(tmp_path / "s")]) == 2
    assert "no trained student" in capsys.readouterr().err


def test_checkpoint_keeps_each_ranks_rng(tmp_path):
    """A distributed run saves every rank's RNG; each rank resumes its own stream."""
    from pagkd_core.checkpoint import load_checkpoint, rng_state, save_checkpoint

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(model.parameters())
    rngs = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        rngs.append(rng_state())
    save_checkpoint(tmp_path / "last", {"model": model}, opt, {"epoch": 1}, rngs)
    expected = []
    for rank in (0, 1):
        load_checkpoint(tmp_path / "last", {"model": model}, opt, rank=rank)
        expected.append(torch.rand(3))
    torch.manual_seed(2)
    assert torch.equal(expected[1], torch.rand(3)) and not torch.equal(expected[0], expected[1])
    torch.manual_seed(7)
    load_checkpoint(tmp_path / "last", {"model": model}, opt, rank=2)  # world grew: keeps its own seed
    after = torch.rand(3)
    torch.manual_seed(7)
    assert torch.equal(after, torch.rand(3))


def test_grad_norms_per_loss_in_history_and_weights_unchanged(dataset, tmp_path):
    """run.grad_norm_every: per-loss backbone gradient norms are recorded per epoch; measuring
    them (extra backward passes) does not change the trained weights."""
    cfg = tiny_cfg(dataset, tmp_path / "g", "run.grad_norm_every=1", "optim.epochs=1")
    train_stage(cfg, "teacher")
    train_stage(cfg, "student")
    last = json.loads((stage_dir(cfg, "student") / "last.json").read_text())
    rec = last["history"][0]
    assert set(rec["grad_norm"]) == {"ce", "pro", "den"} and rec["grad_norm_steps"] == 2
    assert all(v > 0 for v in rec["grad_norm"].values())
    assert "grad_norm" in json.loads((stage_dir(cfg, "student") / "best.json").read_text())
    assert last["distill"]["par_placement"] == "image" and last["distill"]["losses"] == ["pro", "den"]
    off = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, grad_norm_every=0, out_dir=str(tmp_path / "o")))
    import shutil

    shutil.copytree(stage_dir(cfg, "teacher"), stage_dir(off, "teacher"))
    train_stage(off, "student")
    assert "grad_norm" not in json.loads((stage_dir(off, "student") / "last.json").read_text())["history"][0]
    a, b = _weights(stage_dir(cfg, "student") / "last.safetensors"), _weights(stage_dir(off, "student") / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_teacher_is_shared_by_the_few_labels_regime(dataset, tmp_path):
    """data.wli_train_lesions changes the student's data only: the trained teacher resumes as is."""
    cfg = tiny_cfg(dataset, tmp_path, "optim.epochs=1")
    train_stage(cfg, "teacher")
    few = tiny_cfg(dataset, tmp_path, "optim.epochs=1", "data.wli_train_lesions=1")
    assert train_stage(few, "teacher", resume=True)["epoch"] == 1
    assert train_stage(few, "student", name="few")["epoch"] == 1


def test_student_can_start_from_the_teachers_backbone(dataset, tmp_path):
    """distill.init_from_teacher copies the NBI teacher's backbone into the student before the
    first step (lr 0 keeps it there); the head starts fresh; a run recorded before the setting
    existed keeps its resume key."""
    cfg = tiny_cfg(dataset, tmp_path, "optim.epochs=1", "teacher_optim.epochs=1")
    train_stage(cfg, "teacher")
    init = tiny_cfg(dataset, tmp_path, "optim.epochs=1", "distill.method=none", "distill.init_from_teacher=true",
                    "optim.lr=0", "optim.weight_decay=0")
    train_stage(init, "student", name="init")
    teacher = load_file(str(stage_dir(cfg, "teacher") / "best.safetensors"))
    student = load_file(str(stage_dir(init, "init") / "last.safetensors"))
    convs = [k for k in teacher if k.startswith("model.backbone.") and k.endswith("conv1.weight")]
    assert convs and all(torch.equal(teacher[k], student[k]) for k in convs)
    assert not torch.equal(teacher["model.head.weight"], student["model.head.weight"])
    both = tiny_cfg(dataset, tmp_path, "distill.init_from_teacher=true", "student.pretrained=x.safetensors")
    with pytest.raises(ValueError, match="keep one"):
        train_stage(both, "student", name="both")
    from pagkd_core.train import resume_key

    old = json.loads(json.dumps(cfg.to_dict()))
    del old["distill"]["init_from_teacher"]  # a config.json written before the setting existed
    assert resume_key(old, "student") == resume_key(cfg.to_dict(), "student")


def test_a_student_can_continue_an_exported_student(dataset, tmp_path):
    """student.pretrained_head: training starts from the exported student's classifier and
    embedding too (lr 0 keeps them there); a run recorded before the setting existed keeps its
    resume key."""
    from pagkd_core.train import resume_key

    cfg = tiny_cfg(dataset, tmp_path, "optim.epochs=1", "distill.method=none")
    first = exported_student(cfg, "first", tmp_path / "first")
    again = tiny_cfg(dataset, tmp_path, "optim.epochs=1", "distill.method=none", "optim.lr=0", "optim.weight_decay=0",
                     f"student.pretrained={first}", "student.pretrained_head=true")
    train_stage(again, "student", name="again")
    exported = load_file(str(first))
    second = load_file(str(stage_dir(again, "again") / "last.safetensors"))
    assert all(torch.equal(exported[k].float(), second[f"model.{k}"]) for k in ("head.weight", "proj.weight"))
    old = json.loads(json.dumps(cfg.to_dict()))
    del old["student"]["pretrained_head"]  # a config.json written before the setting existed
    assert resume_key(old, "student") == resume_key(cfg.to_dict(), "student")


def test_wli_only_resume_key_ignores_the_distillers_settings_but_not_the_embedding():
    """A WLI-only run is shared by benchmark tables whose PaGKD rows use other loss weights."""
    from pagkd_core.config import Config
    from pagkd_core.train import resume_key

    def key(**distill):
        c = Config().to_dict()
        c["distill"].update(distill)
        return resume_key(c, "student")

    assert key(method="none", pro_weight=0.1, lr=1e-3) == key(method="none", pro_weight=1.0)
    assert key(method="none") != key(method="none", embed_dim=64)
    assert key(method="none") != key(method="none", init_from_teacher=True)
    assert key(method="pro+den", pro_weight=0.1) != key(method="pro+den", pro_weight=1.0)


def test_far_lesions_train_their_class_split_towards_even_odds_and_leave_presence_alone():
    """data.far_coverage: a far lesion's image trains its split among the lesion classes towards
    even odds and nothing on no_lesion; every other image towards its label, as before."""
    from pagkd_core.class_loss import class_loss, far_lesion_columns
    from pagkd_core.config import Config
    from pagkd_core.train import resume_key

    unknown = far_lesion_columns(["no_lesion", "hyperplastic", "adenoma"], 0.05)
    assert unknown.tolist() == [1, 2]
    assert far_lesion_columns(["no_lesion", "hyperplastic", "adenoma"], 0.0) is None
    with pytest.raises(ValueError, match="needs a no_lesion class"):
        far_lesion_columns(["hyperplastic", "adenoma"], 0.05)

    logits = torch.tensor([[0.0, 4.0, -4.0], [0.0, 4.0, -4.0], [3.0, 0.0, 0.0]], requires_grad=True)
    y = torch.tensor([1, 1, 0])
    none = torch.zeros(3, dtype=torch.bool)
    assert torch.equal(class_loss(logits, y, none, unknown), F.cross_entropy(logits, y))  # nothing far: as before
    far = torch.tensor([False, True, False])
    loss = class_loss(logits, y, far, unknown)
    loss.backward()
    # the far image is pushed towards even class odds (its class logits closer), not towards
    # class 1, and its no_lesion logit gets no gradient at all (presence is not its target)
    g = logits.grad[1]
    assert g[1] > 0 > g[2] and float(g[0]) == 0.0
    assert float(loss.detach()) > float(F.cross_entropy(logits.detach(), y))

    def key(**data):
        c = Config().to_dict()
        c["data"].update(data)
        return resume_key(c, "student")

    assert key() == key(far_coverage=0.0, presence_coverage=1.0, presence_contrast=0.0)  # runs from before keep their key
    assert key(far_coverage=0.15) != key(far_coverage=0.15, presence_contrast=4.0)
    assert key() != key(far_coverage=0.05)
    assert key(far_coverage=0.15) != key(far_coverage=0.15, presence_coverage=0.02)


def test_far_lesions_still_seen_train_presence_as_well():
    """data.presence_coverage: a FAR_SEEN image's target is "a lesion, class unknown" (0 on
    no_lesion, even odds over the lesion classes): its no_lesion logit is pushed down, its class
    logits towards each other; a FAR image beside it leaves no_lesion alone."""
    from pagkd_core.class_loss import class_loss
    from pagkd_core.data import FAR, FAR_SEEN, NEAR

    cols = torch.tensor([1, 2])
    logits = torch.tensor([[2.0, 3.0, -1.0], [2.0, 3.0, -1.0], [0.0, 1.0, 0.0]], requires_grad=True)
    y = torch.tensor([1, 1, 2])
    kinds = torch.tensor([FAR, FAR_SEEN, NEAR])
    loss = class_loss(logits, y, kinds, cols)
    loss.backward()
    far, seen = logits.grad[0], logits.grad[1]
    assert float(far[0]) == 0.0 and seen[0] > 0  # presence: only the seen one lowers P(no_lesion)
    assert seen[1] > 0 > seen[2] and far[1] > 0 > far[2]  # both towards even class odds
    # the seen image's loss is cross-entropy against (0, 1/2, 1/2)
    soft = -(torch.log_softmax(logits.detach()[1], 0)[cols]).mean()
    split = -(torch.log_softmax(logits.detach()[0, cols], 0)).mean()
    near = F.cross_entropy(logits.detach()[2:], y[2:])
    assert torch.isclose(loss.detach(), (split + soft + near) / 3)


def test_far_flags_come_from_the_manifests_coverage(tmp_path):
    from pagkd_core.data import ImageSet, ImageStore
    from pagkd_core.data.layouts import Sample

    samples = [Sample("a.png", "adenoma", "WLI", "L0", "P0", coverage=c) for c in (0.01, 0.2, None)]
    # a frame with no lesion records coverage 0: it is never far, its no_lesion label is what
    # teaches presence (flagged far, it trained nothing and students read empty frames as lesions)
    samples.append(Sample("n.png", "no_lesion", "WLI", "N0", "P0", coverage=0.0))
    names = ["no_lesion", "hyperplastic", "adenoma"]
    assert ImageSet(samples, names, ImageStore(32), True, far_coverage=0.05).far == [True, False, False, False]
    assert ImageSet(samples, names, ImageStore(32), True).far == [False, False, False, False]
    seen = ImageSet(samples, names, ImageStore(32), True, far_coverage=0.3, presence_coverage=0.1)
    assert seen.far == [True, True, False, False] and seen.far_seen == [False, True, False, False]
    assert [seen.target_kind(i) for i in range(4)] == [1, 2, 0, 0]  # FAR, FAR_SEEN, NEAR, NEAR


def test_presence_contrast_gates_far_lesions_by_what_they_show(tmp_path):
    """data.presence_contrast: of the far lesions big enough, only those changing the picture by
    enough grey levels (manifest lesion_contrast) train presence; unknown contrast never passes;
    read from the manifest column; 0 leaves coverage alone to decide."""
    from pagkd_core.data import ImageSet, ImageStore
    from pagkd_core.data.layouts import Sample, read_manifest

    names = ["no_lesion", "hyperplastic", "adenoma"]
    samples = [Sample("a.png", "adenoma", "WLI", "L0", "P0", coverage=0.03, contrast=c) for c in (1.5, 6.0, None)]
    gated = ImageSet(samples, names, ImageStore(32), True, far_coverage=0.15, presence_coverage=0.0,
                     presence_contrast=4.0)
    assert gated.far == [True] * 3 and gated.far_seen == [False, True, False]
    assert ImageSet(samples, names, ImageStore(32), True, far_coverage=0.15, presence_coverage=0.0).far_seen == [True] * 3
    (tmp_path / "manifest.csv").write_text(
        "path,lesion_id,class,modality,view,paired,coverage,lesion_contrast\n"
        "WLI/adenoma/a.png,L0,adenoma,WLI,0,0,0.03,6.5\nNBI/adenoma/b.png,L1,adenoma,NBI,0,0,0.2,\n")
    read = read_manifest(tmp_path / "manifest.csv")
    assert [s.contrast for s in read] == [6.5, None] and [s.coverage for s in read] == [0.03, 0.2]


def test_model_selection_scores_the_class_of_near_lesions_only():
    import numpy as np

    from pagkd_core.metrics import classification_metrics
    from pagkd_core.train import score_near

    names = ["no_lesion", "hyperplastic", "adenoma"]
    labels = np.array([0, 0, 1, 2, 1, 2, 1, 2])
    probs = np.array([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1],
                      [0.1, 0.8, 0.1], [0.1, 0.1, 0.8],            # near: right
                      [0.1, 0.1, 0.8], [0.1, 0.8, 0.1],            # far: confidently wrong
                      [0.1, 0.7, 0.2], [0.1, 0.2, 0.7]])  # fmt: skip
    far = np.array([False, False, False, False, True, True, False, False])
    m = classification_metrics(labels, probs, names)
    near = score_near(m, labels, probs, far, names)
    assert m["class_auc"] < 1.0 and near["class_auc"] == 1.0
    assert near["presence_auc"] == m["presence_auc"] and near["score"] == (1.0 + m["presence_auc"]) / 2
    assert score_near(m, labels, probs, np.zeros(8, bool), names) == m  # nothing far: unchanged
