"""GKD-Pro: prototype similarity, symmetric InfoNCE with known answers, LR-QFormer shapes."""
import math

import pytest
import torch
import torch.nn.functional as F

from pagkd_core.distill.groups import make_groups, pack_tokens
from pagkd_core.distill.prototype import GKDPro, prototype_infonce, set_similarity
from pagkd_core.distill.qformer import LRQFormer

TAU = 0.1


def two_modalities(protos_w, protos_n):
    """One group per class: rows 0..C-1 WLI, C..2C-1 NBI."""
    c = len(protos_w)
    protos = torch.cat([protos_w, protos_n])
    group = torch.arange(c).repeat(2)
    modality = torch.arange(2).repeat_interleave(c)
    return protos, group, modality, group.clone()


def test_similarity_normalises_each_query_vector():
    a = torch.tensor([[[1.0, 1.0], [2.0, 0.0]]])           # two query vectors of different norms
    b = torch.tensor([[[2.0, 2.0], [0.5, 0.0]]])
    assert set_similarity(a, b).item() == pytest.approx(1.0)   # both pairs aligned
    c = torch.tensor([[[2.0, 2.0], [-0.5, 0.0]]])
    assert set_similarity(a, c).item() == pytest.approx(0.0, abs=1e-6)   # mean of +1 and -1
    # Normalising along the query axis ([C]'s defect) would not give 1 for aligned vectors.
    wrong = (F.normalize(a, dim=1) * F.normalize(b, dim=1)).sum(-1).mean()
    assert wrong.item() != pytest.approx(1.0)


def test_identical_prototypes_give_analytic_loss():
    torch.manual_seed(0)
    w = torch.randn(3, 12, 16)
    loss = prototype_infonce(*two_modalities(w, w.clone()), TAU)
    s = set_similarity(w, w)
    expected = 0.0
    for c in range(3):   # anchor WLI_c and NBI_c give the same term when the sets are identical
        neg = sum(2 * math.exp(s[c, b].item() / TAU) for b in range(3) if b != c)
        expected += -math.log(math.exp(1 / TAU) / (math.exp(1 / TAU) + neg))
    assert loss.item() == pytest.approx(expected / 3, rel=1e-5)


def test_identical_antipodal_prototypes_are_the_minimum():
    torch.manual_seed(1)
    tau = 0.5   # a larger temperature keeps the minimum away from float rounding
    p0 = torch.randn(12, 16, dtype=torch.float64)
    w = torch.stack([p0, -p0])                          # two classes, every query vector opposite
    best = prototype_infonce(*two_modalities(w, w.clone()), tau)
    # Each anchor: positive at cos 1, two negatives at cos -1.
    assert best.item() == pytest.approx(math.log(1 + 2 * math.exp(-2 / tau)), rel=1e-9)
    for trial in range(20):
        noise = torch.randn(2, 2, 12, 16, dtype=torch.float64) * (0.01 + 0.1 * trial)
        worse = prototype_infonce(*two_modalities(w + noise[0], w + noise[1]), tau)
        assert worse.item() > best.item()


def test_loss_is_symmetric_in_modalities():
    torch.manual_seed(2)
    w, n = torch.randn(3, 4, 8), torch.randn(3, 4, 8)
    assert prototype_infonce(*two_modalities(w, n), TAU).item() == pytest.approx(
        prototype_infonce(*two_modalities(n, w), TAU).item(), rel=1e-6)


def test_nbi_anchors_pull_their_wli_positive():
    # WLI-only anchors ([C]'s defect) would leave NBI_c's own positive unused; here moving the
    # WLI prototype towards NBI changes the loss through both anchors.
    torch.manual_seed(3)
    w = torch.randn(2, 4, 8, requires_grad=True)
    n = torch.randn(2, 4, 8, requires_grad=True)
    prototype_infonce(*two_modalities(w, n), TAU).backward()
    assert w.grad.abs().sum() > 0 and n.grad.abs().sum() > 0


def test_image_level_same_class_couples_are_not_negatives():
    # Four couples, classes 0,0,1,1: same-class sets of other couples must not enter the softmax.
    torch.manual_seed(4)
    w, n = torch.randn(4, 4, 8), torch.randn(4, 4, 8)
    protos = torch.cat([w, n])
    group = torch.arange(4).repeat(2)
    modality = torch.arange(2).repeat_interleave(4)
    classes = torch.tensor([0, 0, 1, 1]).repeat(2)
    loss = prototype_infonce(protos, group, modality, classes, TAU)
    s = set_similarity(protos, protos) / TAU
    terms = []
    for a in range(8):
        pos = (a + 4) % 8
        cand = [pos] + [j for j in range(8) if classes[j] != classes[a]]
        terms.append(-(s[a, pos] - torch.logsumexp(s[a, cand], 0)))
    assert loss.item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5)


def test_no_anchor_gives_connected_zero():
    protos = torch.randn(2, 4, 8, requires_grad=True)
    loss = prototype_infonce(protos, torch.tensor([0, 1]), torch.tensor([0, 0]), torch.tensor([0, 1]), TAU)
    loss.backward()
    assert loss.item() == 0.0 and protos.grad is not None


def test_qformer_ignores_padding():
    torch.manual_seed(5)
    qf = LRQFormer(dim=16, n_queries=3, blocks=2, heads=4).eval()
    emb = torch.randn(3, 16, 2, 2)
    short, slot, valid = pack_tokens(emb, [torch.tensor([0])])
    alone = qf(short, slot, valid)
    packed, slot, valid = pack_tokens(emb, [torch.tensor([0]), torch.tensor([1, 2])])
    assert packed.shape == (2, 8, 16) and valid[0].sum() == 4
    together = qf(packed, slot, valid)
    assert together.shape == (2, 3, 16)
    torch.testing.assert_close(together[0], alone[0], atol=1e-5, rtol=1e-5)


def test_qformer_rejects_oversized_group():
    qf = LRQFormer(dim=8, n_queries=2, heads=2, max_images=2)
    tokens, slot, valid = pack_tokens(torch.randn(3, 8, 1, 1), [torch.arange(3)])
    with pytest.raises(ValueError, match="max_group_images"):
        qf(tokens, slot, valid)


def test_gkdpro_unequal_groups_and_set_classifier():
    torch.manual_seed(6)
    pro = GKDPro(dim=16, num_classes=3, n_queries=4, heads=2, set_classifier=True)
    s_labels, t_labels = torch.tensor([0, 0, 0, 1, 2]), torch.tensor([0, 1, 1, 1])   # class 2 WLI-only
    groups = make_groups("group", s_labels, t_labels)
    s_emb = torch.randn(5, 16, 2, 2, requires_grad=True)
    t_emb = torch.randn(4, 16, 2, 2, requires_grad=True)
    protos, _, modality, classes = pro.prototypes(s_emb, t_emb, groups)
    assert protos.shape == (5, 4, 16)                       # WLI 0,1,2 and NBI 0,1
    assert classes.tolist() == [0, 1, 2, 0, 1] and modality.tolist() == [0, 0, 0, 1, 1]
    loss = pro(s_emb, t_emb, groups)
    loss.backward()
    assert torch.isfinite(loss) and s_emb.grad.abs().sum() > 0 and t_emb.grad.abs().sum() > 0
    assert pro.set_head.weight.grad.abs().sum() > 0


def test_centring_removes_the_collapsed_stationary_point():
    """Sets that share one large common vector (as at the start of training) sit where the
    uncentred loss has a vanishing gradient; the centred comparison still sees, and pushes,
    their small class differences."""
    from pagkd_core.distill.prototype import centred

    torch.manual_seed(2)
    common = torch.randn(1, 12, 16) * 100.0
    w = common + torch.randn(2, 12, 16)          # WLI sets of two classes
    n = common + torch.randn(2, 12, 16)          # NBI sets of two classes
    protos, group, modality, classes = two_modalities(w, n)
    grads = []
    for transform in (lambda p: p, centred):
        p = protos.clone().requires_grad_()
        loss = prototype_infonce(transform(p), group, modality, classes, TAU)
        grads.append(torch.autograd.grad(loss, p)[0].norm().item())
        if transform is centred:
            assert loss.item() > math.log(3) - 0.5   # random class structure: far from solved
    assert grads[1] > 100 * grads[0]
