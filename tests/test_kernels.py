"""SRCA op: every CPU implementation against the materialised-mask reference."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
from kernels.flex import srca_flex
from kernels.reference import relation_mask, srca_reference

CPU_GRAD_IMPLS = [name for name in kernels.available_impls("cpu", torch.float32, needs_grad=True)
                  if name not in ("reference", "triton")]
PATTERNS = ("random", "one_label", "all_ambiguous", "alternating", "disjoint")
SETTINGS = settings(derandomize=True, max_examples=20, deadline=None, database=None)


def make_labels(pattern: str, G: int, L: int, gen: torch.Generator, side: str) -> torch.Tensor:
    if pattern == "random":
        return torch.randint(-1, 3, (G, L), generator=gen)
    if pattern == "one_label":
        return torch.zeros(G, L, dtype=torch.long)
    if pattern == "all_ambiguous":
        return torch.full((G, L), -1, dtype=torch.long)
    if pattern == "alternating":
        return (torch.arange(L) % 3 - 1).expand(G, L).clone()
    # disjoint: queries carry labels no key has -> every row fully masked
    return torch.full((G, L), 1 if side == "q" else 0, dtype=torch.long)


def make_case(G, H, Lq, Lk, D, pattern, seed, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(G, H, L, D, generator=gen, dtype=dtype).requires_grad_() for L in (Lq, Lk, Lk))
    ql = make_labels(pattern, G, Lq, gen, "q")
    kl = make_labels(pattern, G, Lk, gen, "k")
    weight = torch.randn(G, H, Lq, D, generator=gen, dtype=dtype)
    return q, k, v, ql, kl, weight


def run(impl, q, k, v, ql, kl, weight, scale=None):
    """Output and (dq, dk, dv) of a weighted sum, so every output element has its own gradient."""
    for t in (q, k, v):
        t.grad = None
    out = kernels.srca(q, k, v, ql, kl, scale=scale, impl=impl)
    (out * weight).sum().backward()
    return out.detach(), q.grad.clone(), k.grad.clone(), v.grad.clone()


shapes = st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 300), st.integers(1, 300),
                   st.sampled_from([4, 16, 33]))


@pytest.mark.parametrize("impl", CPU_GRAD_IMPLS)
@SETTINGS
@given(shape=shapes, pattern=st.sampled_from(PATTERNS), seed=st.integers(0, 2**16))
def test_matches_reference_forward_and_backward(impl, shape, pattern, seed):
    G, H, Lq, Lk, D = shape
    case = make_case(G, H, Lq, Lk, D, pattern, seed)
    ref, got = run("reference", *case), run(impl, *case)
    for name, a, b in zip(("out", "dq", "dk", "dv"), ref, got):
        assert torch.isfinite(b).all(), f"{impl} {name} has NaN/inf"
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=f"{impl} {name} differs")


@pytest.mark.parametrize("impl", ["reference", *CPU_GRAD_IMPLS])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_masked_rows_exactly_zero(impl, pattern):
    q, k, v, ql, kl, weight = make_case(2, 2, 70, 90, 16, pattern, seed=3)
    ql[:, :5] = 2           # a label no key carries (make_labels draws keys from -1..2 only when random)
    kl[kl == 2] = 0
    out, dq, _, _ = run(impl, q, k, v, ql, kl, weight)
    masked = ~relation_mask(ql, kl).any(-1)                      # (G, Lq)
    assert masked[:, :5].all()
    assert (out.permute(0, 2, 1, 3)[masked] == 0).all()
    assert (dq.permute(0, 2, 1, 3)[masked] == 0).all()
    assert torch.isfinite(dq).all() and torch.isfinite(out).all()


@pytest.mark.parametrize("impl", ["reference", *CPU_GRAD_IMPLS])
@pytest.mark.parametrize("pattern", ["random", "alternating", "disjoint"])
def test_gradcheck_float64(impl, pattern):
    q, k, v, ql, kl, _ = make_case(1, 2, 7, 9, 4, pattern, seed=11, dtype=torch.float64)
    fn = lambda q_, k_, v_: kernels.srca(q_, k_, v_, ql, kl, scale=0.7, impl=impl)
    assert torch.autograd.gradcheck(fn, (q, k, v), eps=1e-6, atol=1e-6, fast_mode=True)


@pytest.mark.parametrize("impl", CPU_GRAD_IMPLS)
def test_half_inputs_computed_in_float32(impl):
    q, k, v, ql, kl, _ = make_case(1, 2, 40, 50, 16, "random", seed=5)
    out = kernels.srca(q.bfloat16(), k.bfloat16(), v.bfloat16(), ql, kl, impl=impl)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), srca_reference(q, k, v, ql, kl), rtol=3e-2, atol=3e-2)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@settings(derandomize=True, max_examples=8, deadline=None, database=None)
@given(shape=shapes, pattern=st.sampled_from(PATTERNS), seed=st.integers(0, 2**16))
def test_flex_forward_matches_reference(shape, pattern, seed):
    G, H, Lq, Lk, D = shape
    q, k, v, ql, kl, _ = make_case(G, H, Lq, Lk, D, pattern, seed)
    with torch.no_grad():
        # eager (unfused) flex: the same mask_mod and block mask as the compiled path, no compile wait
        got = srca_flex(q, k, v, ql, kl, compiled=False)
        torch.testing.assert_close(got, srca_reference(q, k, v, ql, kl), rtol=1e-4, atol=1e-5)


def test_flex_on_cpu_with_grad_is_refused_and_auto_skips_it():
    q, k, v, ql, kl, _ = make_case(1, 1, 8, 8, 4, "random", seed=0)
    with pytest.raises(ValueError, match="cannot run"):
        kernels.srca(q, k, v, ql, kl, impl="flex")
    assert kernels.choose_impl("cpu", torch.float32, needs_grad=True) != "flex"


def test_explicit_scale_and_default_scale():
    q, k, v, ql, kl, _ = make_case(1, 2, 20, 30, 16, "random", seed=2)
    for impl in CPU_GRAD_IMPLS:
        torch.testing.assert_close(kernels.srca(q, k, v, ql, kl, impl=impl),
                                   srca_reference(q, k, v, ql, kl, 1 / math.sqrt(16)), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(kernels.srca(q, k, v, ql, kl, scale=2.0, impl=impl),
                                   srca_reference(q, k, v, ql, kl, 2.0), rtol=1e-4, atol=1e-5)


def test_non_contiguous_inputs_and_int32_labels():
    q, k, v, ql, kl, _ = make_case(2, 2, 30, 40, 16, "random", seed=4)
    qt = q.detach().transpose(2, 3).contiguous().transpose(2, 3)       # same values, other strides
    for impl in CPU_GRAD_IMPLS:
        torch.testing.assert_close(kernels.srca(qt, k, v, ql.int(), kl.int(), impl=impl),
                                   srca_reference(q, k, v, ql, kl), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bad, match", [
    ({"q": torch.randn(2, 5, 8)}, "4-D"),
    ({"k": torch.randn(1, 1, 6, 4)}, "k and v"),
    ({"q_labels": torch.zeros(1, 5)}, "integer"),
    ({"k_labels": torch.zeros(1, 7, dtype=torch.long)}, r"\(1, 6\)"),
    ({"impl": "nope"}, "unknown impl"),
])
def test_bad_input_errors_say_what_to_do(bad, match):
    args = {"q": torch.randn(1, 1, 5, 8), "k": torch.randn(1, 1, 6, 8), "v": torch.randn(1, 1, 6, 8),
            "q_labels": torch.zeros(1, 5, dtype=torch.long), "k_labels": torch.zeros(1, 6, dtype=torch.long)}
    args.update(bad)
    with pytest.raises((ValueError, TypeError), match=match):
        kernels.srca(**args)


def test_auto_uses_the_measured_order():
    table = kernels.op.dispatch_table()
    assert set(table) >= {"cpu"}
    first_runnable = next(n for n in table["cpu"]["order"]
                          if kernels.op.can_run(n, "cpu", torch.float32, True, auto=True))
    assert kernels.choose_impl("cpu", torch.float32, needs_grad=True) == first_runnable


@pytest.mark.parametrize("impl", ["reference", *CPU_GRAD_IMPLS])
@pytest.mark.parametrize("Lq, Lk", [(0, 5), (5, 0)])
def test_empty_token_sets(impl, Lq, Lk):
    q, k, v, ql, kl, weight = make_case(1, 2, Lq, Lk, 8, "one_label", seed=1)
    out, dq, dk, dv = run(impl, q, k, v, ql, kl, weight)
    assert out.shape == (1, 2, Lq, 8) and dk.shape == (1, 2, Lk, 8)
    assert (out == 0).all() and (dq == 0).all() and (dk == 0).all() and (dv == 0).all()


@pytest.mark.parametrize("impl", CPU_GRAD_IMPLS)
def test_double_backward_is_refused_not_silently_zero(impl):
    q, k, v, ql, kl, _ = make_case(1, 1, 20, 20, 8, "random", seed=6, dtype=torch.float64)
    (grad,) = torch.autograd.grad(kernels.srca(q, k, v, ql, kl, impl=impl).pow(2).sum(), q, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad.sum().backward()
