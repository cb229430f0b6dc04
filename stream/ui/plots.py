"""The live timeline: raw and smoothed alert probability, threshold, uncertain band, alert spans."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure  # not pyplot: its global state is not safe across handler threads

from stream.video_metrics import runs


def alert_spans(t: np.ndarray, alert: np.ndarray) -> list[tuple[float, float]]:
    """(start, end) times of consecutive alert runs; a run still on ends at the last time."""
    return [(t[s], t[min(e, len(t) - 1)]) for s, e in runs(alert)]


def timeline_figure(records: list[dict], threshold: float, band: float, title: str = "", binary: bool = True):
    """A small matplotlib figure of the last records (each with t, p_raw, p_smooth, alert).

    The alert machine thresholds the top class's confidence; with two classes that is
    P(alert class) >= threshold for an alert and <= 1 - threshold for the other call."""
    fig = Figure(figsize=(8, 2.4), dpi=80)
    ax = fig.subplots()
    if records:
        t = np.array([r["t"] for r in records])
        t = t - t[-1]  # seconds before now
        raw = np.array([r["p_raw"] for r in records])
        smooth = np.array([r["p_smooth"] for r in records])
        alert = np.array([bool(r["alert"]) for r in records])
        for a, b in alert_spans(t, alert):
            ax.axvspan(a, b, color="tab:red", alpha=0.18, lw=0)
        for r, end in zip(records, t):
            if r.get("gap_s"):  # the input's outage: hatched, no line across it
                ax.axvspan(end - r["gap_s"], end, facecolor="none", edgecolor="0.4", hatch="//", lw=0)
        ax.plot(t, raw, color="0.6", lw=0.8, label="raw")
        ax.plot(t, smooth, color="tab:blue", lw=1.6, label="smoothed")
        ax.set_xlim(min(t[0], -1.0), 0)
    lo = max(threshold - band, 0.0)
    ax.axhspan(lo, threshold, color="tab:orange", alpha=0.15, lw=0, label="uncertain band")
    ax.axhline(threshold, color="tab:red", lw=0.8, ls="--", label="threshold")
    if binary:  # the other class is called at P(alert) <= 1 - threshold, uncertain just above that
        ax.axhspan(1 - threshold, 1 - lo, color="tab:orange", alpha=0.15, lw=0)
        ax.axhline(1 - threshold, color="tab:green", lw=0.8, ls="--")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("seconds before now")
    ax.set_ylabel("P(alert class)")
    ax.set_title(title or "live timeline (red: alert) - synthetic data", fontsize=9)
    ax.legend(loc="upper left", fontsize=7, ncol=4, frameon=False)
    fig.tight_layout()
    return fig
