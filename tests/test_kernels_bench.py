"""benchmarks.kernels: its correctness check, dispatch order and memory probe are real."""
import torch

from benchmarks.kernels import Case, cam_labels, cpu_peak, dispatch_order, table, time_case


def test_time_case_checks_every_cpu_impl_and_orders_them():
    result = time_case(Case(1, 2, 300, D=16), ["reference", "numba"], "cpu", repeats=1)
    assert not result["failed"]
    assert all(err < 1e-4 for err in result["max_rel_error"].values()), result["max_rel_error"]
    row = {"case": {"L": 1600, "dtype": "float32"}, "case_name": "x", "peak_bytes": {}, **result}
    order = dispatch_order([row], ["reference", "numba"])
    assert sorted(order) == ["numba", "reference"]
    assert order[0] == min(result["seconds"], key=result["seconds"].get)
    assert "| x |" in table([row], ["reference", "numba"], "cpu")


def test_broken_impl_is_reported_and_left_out_of_dispatch(monkeypatch):
    import kernels.op
    monkeypatch.setitem(kernels.op.IMPLS, "numba", lambda *a, **k: torch.full((1, 1, 64, 16), float("nan")))
    result = time_case(Case(1, 1, 64, D=16), ["reference", "numba"], "cpu", repeats=1)
    row = {"case": {"L": 64, "dtype": "float32"}, **result}
    assert dispatch_order([row], ["reference", "numba"]) == ["reference"]


def test_cam_labels_have_all_three_kinds():
    labels = cam_labels(2, 1600, torch.Generator().manual_seed(0))
    counts = torch.bincount(labels.flatten() + 1, minlength=3)
    assert labels.shape == (2, 1600) and (counts > 100).all()


def test_peak_memory_linear_for_numba_quadratic_for_reference():
    """Peak RSS of one forward+backward in a fresh process, at L and 4L (numba) and 4L (reference,
    which keeps several L x L float32 buffers: scores, masked scores, probabilities)."""
    small, large = Case(1, 1, 1024, D=64, labels="dense"), Case(1, 1, 4096, D=64, labels="dense")
    ref = cpu_peak(large, "reference")
    fused = [cpu_peak(c, "numba") for c in (small, large)]
    assert ref is not None and None not in fused
    assert ref > 3 * 4 * 4096**2, ref                # quadratic: at least three L x L buffers
    assert fused[1] < ref / 8, (fused, ref)
    assert fused[1] / max(fused[0], 1) < 6, fused   # linear: 4x expected


def test_dispatch_is_kept_per_dtype(monkeypatch):
    """Measured rows of two dtypes that rank differently give two orders, and `auto` follows the
    one for the call's dtype (the overall order for a dtype that was not measured)."""
    import kernels.op
    from benchmarks.kernels import dispatch_by_dtype

    def row(dtype, ref_s, numba_s):
        return {"case": {"L": 1600, "dtype": dtype}, "seconds": {"reference": ref_s, "numba": numba_s},
                "max_rel_error": {"reference": 0.0, "numba": 0.0}}

    rows = [row("bfloat16", 2.0, 1.0), row("float32", 1.0, 2.0)]
    by_dtype = dispatch_by_dtype(rows, ["reference", "numba"])
    assert by_dtype == {"bfloat16": ["numba", "reference"], "float32": ["reference", "numba"]}
    table = {"cpu": {"order": ["numba", "reference"], "by_dtype": {"float32": ["reference", "numba"]}}}
    monkeypatch.setattr(kernels.op, "dispatch_table", lambda: table)
    assert kernels.op.choose_impl("cpu", torch.float32, needs_grad=True) == "reference"
    assert kernels.op.choose_impl("cpu", torch.float64, needs_grad=True) == "numba"
