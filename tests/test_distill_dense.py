"""GKD-Den: discretisation, relation-masked reconstruction, fully masked rows, consistency."""
import pytest
import torch

import kernels
from pagkd_core.distill.dense import GKDDen, consistency, discretise, has_key
from pagkd_core.distill.groups import make_groups, pack_labels


def identity_den(dim=8, heads=1, loss="l2"):
    den = GKDDen(dim, heads, loss)
    with torch.no_grad():
        for lin in (den.w_q, den.w_k, den.w_v):
            lin.weight.copy_(torch.eye(dim))
    return den


def test_discretise_thresholds():
    cam = torch.tensor([0.0, 0.29, 0.3, 0.5, 0.69, 0.7, 1.0])
    assert discretise(cam).tolist() == [0, 0, -1, -1, -1, 1, 1]
    with pytest.raises(ValueError, match="thresholds"):
        discretise(cam, 0.8, 0.2)


def test_mask_with_one_allowed_key_reproduces_that_key():
    torch.manual_seed(0)
    den = identity_den(dim=8, heads=2)
    queries = torch.randn(1, 3, 8)
    keys = torch.randn(1, 5, 8)
    q_labels = torch.tensor([[1, 0, 1]])
    k_labels = torch.tensor([[0, -1, 1, 0, -1]])      # only key 2 is a lesion key
    out = den.reconstruct(queries, q_labels, keys, k_labels)
    torch.testing.assert_close(out[0, 0], keys[0, 2], rtol=0, atol=1e-6)
    torch.testing.assert_close(out[0, 2], keys[0, 2], rtol=0, atol=1e-6)
    # Query 1 (background) mixes only background keys 0 and 3.
    w = torch.softmax(torch.stack([queries[0, 1, :4] @ keys[0, 0, :4], queries[0, 1, :4] @ keys[0, 3, :4]]) / 2, 0)
    torch.testing.assert_close(out[0, 1, :4], w[0] * keys[0, 0, :4] + w[1] * keys[0, 3, :4])


def test_fully_masked_rows_are_zero_and_nan_free():
    torch.manual_seed(1)
    den = GKDDen(8, heads=2)
    f_w = torch.randn(1, 4, 8, requires_grad=True)
    f_n = torch.randn(1, 3, 8, requires_grad=True)
    l_w = torch.tensor([[1, -1, 0, 1]])
    l_n = torch.tensor([[0, 0, -1]])                  # no lesion key: rows 0, 1 (ambiguous), 3 masked
    out = den.reconstruct(f_w, l_w, f_n, l_n)
    assert torch.equal(out[0, [0, 1, 3]], torch.zeros(3, 8))
    rows = has_key(l_w, l_n)
    assert rows.tolist() == [[False, False, True, False]]
    for kind in ("l2", "cosine"):
        loss = consistency(out, f_w, rows, kind)
        grads = torch.autograd.grad(loss, [f_w, f_n] + list(den.parameters()), retain_graph=True)
        assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads)
        # Masked rows are left out: their features get gradient only via being keys, none here.
        assert grads[0][0, [0, 1, 3]].abs().sum() == 0


def test_nothing_reconstructable_gives_connected_zero():
    den = GKDDen(4)
    out = torch.zeros(1, 2, 4, requires_grad=True)
    loss = consistency(out, torch.randn(1, 2, 4), torch.zeros(1, 2, dtype=torch.bool), "l2")
    loss.backward()
    assert loss.item() == 0.0 and out.grad is not None
    assert den.loss == "l2"


def test_consistency_known_values():
    recon = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    orig = torch.tensor([[[3.0, 0.0], [5.0, 5.0]]])
    rows = torch.tensor([[True, False]])
    assert consistency(recon, orig, rows, "l2").item() == pytest.approx(2.0)       # (2^2 + 0) / 2
    assert consistency(recon, orig, rows, "cosine").item() == pytest.approx(0.0, abs=1e-6)


def test_den_matches_reference_srca_per_class_with_unequal_groups():
    torch.manual_seed(2)
    den = GKDDen(8, heads=1)
    s_labels, t_labels = torch.tensor([0, 1, 1, 1]), torch.tensor([1, 0, 0])
    groups = make_groups("group", s_labels, t_labels)
    s_emb, t_emb = torch.randn(4, 8, 2, 2), torch.randn(3, 8, 2, 2)
    s_tok = torch.randint(-1, 2, (4, 4))
    t_tok = torch.randint(-1, 2, (3, 4))
    loss = den(s_emb, t_emb, s_tok, t_tok, groups)
    # Same value class by class, unpadded, straight from the reference op.
    totals = {"w": [], "n": []}
    for c in (0, 1):
        fw = s_emb[s_labels == c].permute(0, 2, 3, 1).reshape(1, -1, 8)
        fn = t_emb[t_labels == c].permute(0, 2, 3, 1).reshape(1, -1, 8)
        lw, ln = s_tok[s_labels == c].reshape(1, -1), t_tok[t_labels == c].reshape(1, -1)
        for key, (fq, lq, fk, lk) in (("w", (fw, lw, fn, ln)), ("n", (fn, ln, fw, lw))):
            rec = kernels.srca_reference(den.w_q(fq)[:, None], den.w_k(fk)[:, None], den.w_v(fk)[:, None],
                                         lq, lk)[:, 0]
            rows = has_key(lq, lk)[0]
            totals[key].append((rec[0] - fq[0]).pow(2).mean(-1)[rows])
    expected = 0.5 * (torch.cat(totals["w"]).mean() + torch.cat(totals["n"]).mean())
    torch.testing.assert_close(loss, expected)


def test_pack_labels_pads_with_ambiguous():
    tok = torch.tensor([[0, 1], [1, 1], [0, 0]])
    packed = pack_labels(tok, [torch.tensor([0]), torch.tensor([1, 2])])
    assert packed.tolist() == [[0, 1, -1, -1], [1, 1, 0, 0]]


def test_rejects_bad_options():
    with pytest.raises(ValueError, match="den_heads"):
        GKDDen(10, heads=4)
    with pytest.raises(ValueError, match="loss"):
        GKDDen(8, loss="l1")


def fit_den(detach_teacher: bool, steps: int = 60):
    """Optimise GKD-Den alone on free student tokens and a trainable teacher-side projection."""
    torch.manual_seed(1)
    labels = torch.arange(4) % 2
    groups = make_groups("group", labels, labels)
    tok = torch.randint(0, 2, (4, 16))
    teacher_features = torch.randn(4, 8, 4, 4)
    s_emb = torch.nn.Parameter(torch.randn(4, 8, 4, 4))
    proj, den = torch.nn.Conv2d(8, 8, 1), GKDDen(8, srca_impl="reference")
    opt = torch.optim.Adam([s_emb, *den.parameters(), *proj.parameters()], lr=5e-2)
    for _ in range(steps):
        t_emb = proj(teacher_features)
        loss = den(s_emb, t_emb.detach() if detach_teacher else t_emb, tok, tok, groups)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item(), proj(teacher_features).std(dim=(0, 2, 3)).mean().item()


def test_teacher_stop_gradient_prevents_collapse():
    # [C]'s form (gradient into the teacher projection) is minimised by shrinking the teacher
    # tokens towards one vector; the default stop-gradient keeps them and a real loss floor.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny tensors: threading only adds overhead on a shared machine
    try:
        loss_c, std_c = fit_den(detach_teacher=False)
        loss_p, std_p = fit_den(detach_teacher=True)
    finally:
        torch.set_num_threads(threads)
    assert std_c < 0.5 * std_p
    assert loss_c < 0.5 * loss_p


def test_coverage_counts_reconstructed_tokens():
    den = GKDDen(4, srca_impl="reference")
    labels = torch.tensor([0, 1])
    groups = make_groups("group", labels, labels)
    s_tok = torch.tensor([[1, 0, -1, 1], [0, 0, 0, 0]])     # class 1 WLI: background only
    t_tok = torch.tensor([[1, 1, 1, 1], [1, 1, -1, -1]])    # class 1 NBI: no background key
    den(torch.randn(2, 4, 2, 2), torch.randn(2, 4, 2, 2), s_tok, t_tok, groups)
    # class 0: WLI tokens 0 and 3 (lesion) and all 4 NBI tokens find keys; class 1: none.
    assert den.coverage.item() == pytest.approx(6 / 16)
