"""What an int8 graph costs against fp32: top-1 agreement (on held-out images and on the frames
``--engine auto``'s probe judges it on), logit error, AUC, and speed timed fairly on a shared
machine. Used by ``benchmarks.int8`` (one graph) and ``benchmarks.int8_sweep`` (a table of
settings)."""
from __future__ import annotations

import numpy as np


def rates(engines: dict, x: np.ndarray, batches=(1, 8), seconds: float = 2.0) -> dict[str, dict[int, float]]:
    """Images per second of each of ``engines`` at each batch size: warmed up at every size, then
    timed as ``--engine auto``'s probe times (stream.engines.auto_choice.interleaved_rates), at
    least 3 rounds and until ``seconds`` per engine and size are spent."""
    from stream.engines.auto_choice import interleaved_rates

    for eng in engines.values():  # warm-up at every size
        for b in batches:
            eng.infer(x[np.arange(b) % len(x)])
    return interleaved_rates(engines, x, batches, min_rounds=3, budget_s=seconds * len(engines) * len(batches))


def auc(logits: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of the softmax scores, as the training core reports it (pagkd_core.metrics)."""
    from pagkd_core.metrics import auc_score
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return auc_score(labels, p)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Top-1 agreement of two sets of logits (int8's with fp32's: the bound is >= 0.97)."""
    return float((a.argmax(1) == b.argmax(1)).mean())


def accuracy_cost(a: np.ndarray, b: np.ndarray, labels: np.ndarray | None = None) -> dict:
    """What int8 logits ``b`` lose against fp32 logits ``a``: agreement, logit error, AUC."""
    res: dict = {"images": len(a), "top1_agreement": agreement(a, b), "max_abs_logit_diff": float(np.abs(a - b).max()),
                 "rel_logit_diff": float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))}
    if labels is not None and len(set(labels.tolist())) > 1:
        res.update(auc_fp32=auc(a, labels), auc_int8=auc(b, labels), accuracy_fp32=float((a.argmax(1) == labels).mean()),
                   accuracy_int8=float((b.argmax(1) == labels).mean()))
        res["auc_drop"] = res["auc_fp32"] - res["auc_int8"]
    return res


def probe_agreement(fp32, int8, meta: dict) -> dict:
    """int8's top-1 agreement with fp32 on the frames ``--engine auto``'s probe judges it on (the
    demo video through the model's preprocessor, stream.engines.auto_choice), so the record says
    whether the runtime will accept the graph (on this host's kernels)."""
    from stream.engines import auto_choice
    x, where = auto_choice.probe_frames(meta)
    value = agreement(fp32.infer(x), int8.infer(x))
    return {"probe_agreement": value, "probe_frames": f"{where['count']} {where['from']}",
            "probe_bound": auto_choice.AGREEMENT_BOUND, "probe_accepts": value >= auto_choice.AGREEMENT_BOUND}
