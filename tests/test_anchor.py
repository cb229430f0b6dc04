"""distill.anchor_weight: the class split's KL to the frozen starting student (pagkd_core.anchor)."""

from __future__ import annotations

import json

import pytest
import torch
from test_core_fixtures import TINY, exported_student, make_generic

from pagkd_core.anchor import SplitAnchor
from pagkd_core.config import ConfigError, load_config
from pagkd_core.models import build_model
from pagkd_core.train import StudentObjective, resume_key, train_stage

CLASSES = ["no_lesion", "hyperplastic", "adenoma"]


def test_the_anchor_is_zero_at_the_start_and_leaves_presence_free():
    torch.manual_seed(0)
    student = build_model("resnet10t", 3).eval()
    anchor = SplitAnchor(student, CLASSES)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        logits = student(x)
    assert float(anchor(x, logits)) == pytest.approx(0.0, abs=1e-6)  # the student it starts from

    moved = logits.detach().clone()
    moved[:, 0] += 5.0  # only P(no_lesion) moves: the split, and so the anchor, is unchanged
    assert float(anchor(x, moved)) == pytest.approx(0.0, abs=1e-6)

    moved = logits.detach().clone()
    moved[:, 1] += 3.0
    moved.requires_grad_()
    loss = anchor(x, moved)
    loss.backward()
    assert float(loss.detach()) > 0.01
    assert float(moved.grad[:, 0].abs().sum()) == 0.0  # no gradient on the background
    assert (moved.grad[:, 1] > 0).all() and (moved.grad[:, 2] < 0).all()  # pulled back


def test_the_anchor_stays_frozen_and_in_eval_mode():
    torch.manual_seed(0)
    student = build_model("resnet10t", 3)
    anchor = SplitAnchor(student, CLASSES)
    before = {k: v.clone() for k, v in anchor.state_dict().items()}
    obj = StudentObjective(student, None, None, anchor=anchor).train()
    assert student.training and not anchor.model.training
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        student.head.weight.add_(0.5)  # the student has moved away from where it started
    losses = obj(x, x, y, False)
    assert set(losses) == {"ce", "anchor"} and float(losses["anchor"].detach()) > 0
    opt = torch.optim.SGD([p for p in obj.parameters() if p.requires_grad], lr=0.1)
    sum(losses.values()).backward()
    opt.step()
    assert all(p.grad is None for p in anchor.parameters())
    assert all(torch.equal(anchor.state_dict()[k], v) for k, v in before.items())


def test_the_anchor_needs_an_exported_student_to_start_from():
    with pytest.raises(ConfigError, match="pretrained_head=true"):
        load_config(None, ["distill.anchor_weight=1.0"])
    with pytest.raises(ConfigError, match=">= 0"):
        load_config(None, ["distill.anchor_weight=-1", "student.pretrained=x.safetensors", "student.pretrained_head=true"])


def test_a_fine_tune_with_the_anchor_trains_and_records_it(tmp_path):
    """End to end: an exported student continued with the anchor on; its loss is in the history,
    and the setting is part of the resume key (runs from before it keep theirs)."""
    data = make_generic(tmp_path / "data")
    base = [*TINY, f"data.root={data}", f"run.out_dir={tmp_path}", "optim.epochs=1", "distill.method=none"]
    first = exported_student(load_config(None, base), "first", tmp_path / "first")
    tuned = load_config(None, [*base, f"student.pretrained={first}", "student.pretrained_head=true",
                               "distill.anchor_weight=2.0"])  # fmt: skip
    best = train_stage(tuned, "student", name="anchored")
    assert "anchor" in best["train"] and torch.isfinite(torch.tensor(best["train"]["anchor"]))
    old = json.loads(json.dumps(tuned.to_dict()))
    del old["distill"]["anchor_weight"]  # a config.json written before the setting existed
    zero = json.loads(json.dumps(tuned.to_dict()))
    zero["distill"]["anchor_weight"] = 0.0
    assert resume_key(old, "student") == resume_key(zero, "student") != resume_key(tuned.to_dict(), "student")
