"""A training step of the real GKD-Den loss gives the same loss and gradients with every SRCA
implementation (the trainer reaches the op only through `kernels.srca`)."""
import functools

import pytest
import torch
from torch import nn

import kernels
from pagkd_core.distill.dense import GKDDen, discretise
from pagkd_core.distill.groups import make_groups

CPU_IMPLS = kernels.available_impls("cpu", torch.float32, needs_grad=True)


def gkd_den_step(srca_fn, monkeypatch, heads=2, loss="l2", seed=0):
    """One forward/backward of GKD-Den on synthetic images through tiny conv 'backbones':
    CAM-like maps -> token labels, group-level packing, bidirectional SRCA, consistency loss.
    Returns (loss, {param name: grad})."""
    monkeypatch.setattr(kernels, "srca", srca_fn)
    torch.manual_seed(seed)
    student, teacher = nn.Conv2d(3, 16, 3, stride=4, padding=1), nn.Conv2d(3, 16, 3, stride=4, padding=1)
    den = GKDDen(16, heads=heads, loss=loss)
    x_w, x_n = torch.randn(6, 3, 28, 28), torch.randn(5, 3, 28, 28)
    y_w, y_n = torch.tensor([0, 1, 0, 1, 1, 0]), torch.tensor([1, 0, 0, 1, 1])
    s_emb, t_emb = student(x_w), teacher(x_n)                          # (B, 16, 7, 7)
    cam = lambda e: torch.sigmoid(e.mean(1)).flatten(1).detach()
    s_lab, t_lab = discretise(cam(s_emb), 0.45, 0.55), discretise(cam(t_emb), 0.45, 0.55)
    value = den(s_emb, t_emb, s_lab, t_lab, make_groups("group", y_w, y_n))
    params = dict(student.named_parameters(prefix="s")) | dict(teacher.named_parameters(prefix="t")) \
        | dict(den.named_parameters(prefix="den"))
    grads = torch.autograd.grad(value, list(params.values()))
    return value.detach(), dict(zip(params, grads))


def assert_same_step(got, ref, what):
    torch.testing.assert_close(got[0], ref[0], rtol=1e-5, atol=1e-6, msg=f"{what}: loss differs")
    for name in ref[1]:
        torch.testing.assert_close(got[1][name], ref[1][name], rtol=1e-4, atol=1e-6,
                                   msg=f"{what}: grad of {name} differs")


@pytest.mark.parametrize("loss", ["l2", "cosine"])
@pytest.mark.parametrize("impl", [i for i in CPU_IMPLS if i != "reference"] + ["auto"])
def test_training_step_same_loss_and_grads(impl, loss, monkeypatch):
    op = kernels.srca
    ref = gkd_den_step(functools.partial(op, impl="reference"), monkeypatch, loss=loss)
    got = gkd_den_step(functools.partial(op, impl=impl), monkeypatch, loss=loss)
    assert ref[0] > 0 and all(torch.isfinite(g).all() for g in got[1].values())
    assert_same_step(got, ref, impl)
