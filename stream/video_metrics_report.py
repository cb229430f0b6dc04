"""The issue-14 video-level targets and the evaluation report's text and timeline plots.

``VIDEO_TARGETS`` is the one list of the targets' figures (the report's key table and
``python -m benchmarks.video`` both print from it); ``check_targets`` says which a set of
metrics meets. ``markdown(report)`` renders report.json: one key table (targets first), the
breakdowns by lesion size and WLI evidence, then per video the key table and its timeline.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream.video_metrics import CLOSE_COVERAGE, CLOSE_MIN_S, Outcome, runs


@dataclass(frozen=True)
class Target:
    key: str          # the metric in report.json's metrics
    label: str
    op: str           # ">=" or "<="
    value: float
    short: str        # column head of the report's key table

    def met(self, measured) -> bool | None:
        if measured is None:
            return None
        return measured >= self.value if self.op == ">=" else measured <= self.value


VIDEO_TARGETS = (
    Target("close_first_call_correct", "correct first call, close-view lesions", ">=", 0.85, "first call right"),
    Target("close_first_call_correct_upper_evidence", "correct first call, close-view lesions with WLI evidence "
           "in the upper half", ">=", 0.95, "... upper-half evidence"),
    Target("auc_class_close", "class AUC, WLI frames with a lesion >= 5% of the field", ">=", 0.85,
           "class AUC (close)"),
    Target("auc_presence", "lesion-presence AUC", ">=", 0.95, "presence AUC"),
    Target("false_alarms_no_lesion_per_min", "false alarms per minute of no-lesion video", "<=", 0.5,
           "false alarms/min (no lesion)"),
    Target("time_close_to_correct_median_s", "median time from close view to a correct call (s)", "<=", 1.0,
           "close view -> right call (median s)"),
    Target("modality_accuracy", "modality detector: frames right", ">=", 0.99, "modality right"),
    Target("modality_switches_per_nbi_stretch_max", "modality detector: switches per NBI stretch (max)", "<=", 1,
           "switches/NBI stretch"),
)
CONTEXT = [("close_view_lesions", "close-view lesions"), ("frac_uncertain", "uncertain")]


def check_targets(metrics: dict, targets=VIDEO_TARGETS) -> list[dict]:
    return [{"key": t.key, "label": t.label, "target": f"{t.op} {t.value:g}", "measured": metrics.get(t.key),
             "met": t.met(metrics.get(t.key))} for t in targets]


def fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def md_table(head: list[str], rows: list[list], cell=None) -> str:
    """A markdown table, the reports' one format: strings as they are, other cells through
    ``cell`` (default ``fmt``)."""
    cell = cell or fmt
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                      *["| " + " | ".join(c if isinstance(c, str) else cell(c) for c in r) + " |" for r in rows]])


def table(rows: dict[str, dict]) -> str:
    """Key table: one row per setting, the targets' figures then context; the first row states the targets."""
    cols = [(t.key, t.short) for t in VIDEO_TARGETS] + CONTEXT
    body = [["target", *[f"{t.op} {t.value:g}" for t in VIDEO_TARGETS], *[""] * len(CONTEXT)]]
    body += [[f"`{name}`", *[m.get(k) for k, _ in cols]] for name, m in rows.items()]
    return md_table(["setting", *[label for _, label in cols]], body)


def breakdown_table(by_setting: dict[str, list[dict]], extra: list[tuple[str, str]]) -> str:
    """Rows = bins. Frame columns are the raw model's (the same for every setting); the lesion
    column (first call right) is given per setting."""
    settings = list(by_setting)
    first = by_setting[settings[0]]
    head = ["bin", "frames", *[label for _, label in extra], "lesions",
            *[f"first call right `{s}`" for s in settings]]
    rows = [[r["bin"], r["frames"], *[r[k] for k, _ in extra], r["lesions"],
             *[by_setting[s][i]["first_call_correct"] for s in settings]] for i, r in enumerate(first)]
    return md_table(head, rows)


def onset_table(by_setting: dict[str, list[dict]]) -> str:
    """Rows = bins of close-view lesions; per setting, first call right and the median time."""
    settings = list(by_setting)
    head = ["bin", "lesions", *[f"{what} `{s}`" for s in settings for what in ("first call right", "median s")]]
    rows = [[r["bin"], r["lesions"], *[by_setting[s][i][k] for s in settings
                                       for k in ("first_call_correct", "time_close_to_correct_median_s")]]
            for i, r in enumerate(by_setting[settings[0]])]
    return md_table(head, rows)


def plot_timeline(path: Path, video: str, times: np.ndarray, out: dict[str, tuple[Outcome, np.ndarray]],
                  threshold: float, gaps: list[tuple[float, float]] = ()) -> None:
    """``gaps``: (start, end) of the input's outages, hatched: no picture came, nothing was said."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(out)
    first = out[names[0]][0]
    fig, axes = plt.subplots(len(names), 1, figsize=(12, 1.6 + 1.5 * len(names)), sharex=True, squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        o, _ = out[name]
        for s, e in runs(o.visible & ~o.y):
            ax.axvspan(times[s], times[min(e, len(times) - 1)], color="tab:green", alpha=0.15, lw=0)
        for s, e in runs(o.y):
            ax.axvspan(times[s], times[min(e, len(times) - 1)], color="tab:red", alpha=0.18, lw=0)
        for s, e in runs(~o.wli):
            ax.axvspan(times[s], times[min(e, len(times) - 1)], color="tab:purple", alpha=0.10, lw=0)
        # the class question apart from presence (identical to P(positive) for two-class students)
        ax.plot(times, o.cls_raw, color="0.6", lw=0.6, label="raw P(neoplastic | lesion)")
        ax.plot(times, o.cls_smoothed, color="tab:blue", lw=1.2, label="smoothed")
        if np.isfinite(o.presence_raw).any():
            ax.plot(times, o.presence_raw, color="tab:green", lw=0.6, ls="--", label="raw P(lesion)")
        for a, b in gaps:
            ax.axvspan(a, b, facecolor="none", edgecolor="0.3", hatch="//", lw=0)
        ax.axhline(threshold, color="k", ls=":", lw=0.8)
        ax.fill_between(times, 1.02, 1.10, where=o.alert, color="tab:red", step="mid", label="alert")
        ax.set_ylim(-0.02, 1.12)
        ax.set_ylabel("probability")
        ax.set_title(f"{name}: {o.false_alarms} false alarm(s)", fontsize=9, loc="left")
    axes[0, 0].legend(loc="upper right", fontsize=7, ncol=3)
    axes[-1, 0].set_xlabel("time (s)   shading: red = positive lesion in view, green = other lesion, "
                           "purple = NBI (truth)")
    fig.suptitle(f"{video} (SYNTHETIC data) - {first.y.sum()} positive frames of {len(first.y)}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


DEFINITIONS = (
    f"Close view: a lesion covering >= {CLOSE_COVERAGE:.0%} of the endoscope field for >= {CLOSE_MIN_S:g} s on "
    "WLI frames. First call: the first class label the alert machine shows while the lesion is in view (from "
    "its first visible frame). Time to a correct call: from close-view onset to the first frame at or after "
    "it showing the right label; a lesion never called right counts as infinitely late (median '–' when over "
    "half are). Upper half: WLI evidence >= the median of the close-view lesions (pooled). Class AUC: "
    "neoplastic vs not, on WLI frames with a lesion >= 5% of the field, lesion-class probabilities "
    "renormalised when the student has a no_lesion output. Presence AUC: lesion in view vs not on WLI "
    "frames, score 1 - P(no_lesion). False alarms: alert episodes that overlap no lesion, per minute of "
    "no-lesion video. NBI frames (truth) are left out of the WLI student's frame metrics; frames the runtime "
    "did not analyse are counted (report.json) and never scored. Frame columns of the breakdowns are the raw "
    "model's.")


def markdown(rep: dict) -> str:
    eng = rep["engine"] if isinstance(rep["engine"], str) else rep["engine"]["engine"] + " " + rep["engine"]["precision"]
    lines = ["# Video-level evaluation" + (" (SYNTHETIC videos)" if rep["synthetic"] else ""), "",
             *([f"Command: `{rep['command']}`  "] if rep["command"] else []),  # none for a UI replay
             f"Machine: {rep['machine']}  ", (f"Model: `{rep['model']}` "
              f"(classes: {', '.join(rep['class_names'])})  "),
             f"Engine: {eng}" + (f", {rep['inference_fps']} frames/s through the pipeline" if rep["inference_fps"] else ""),
             "", "Alert machine: " + ", ".join(f"{k}={v}" for k, v in rep["alert_config"].items() if k != "class_names"),
             "", DEFINITIONS, "",
             f"## All videos pooled ({len(rep['videos'])} videos, {_total(rep, 'minutes'):.1f} min)", "",
             table(rep["pooled"]), ""]
    bd = rep["breakdowns"]
    lines += ["### By lesion size in view (share of the field)", "",
              breakdown_table({s: b["by_coverage"] for s, b in bd.items()},
                              [("auc_class_raw", "class AUC"), ("auc_presence_raw", "presence AUC")]), ""]
    if any(row["frames"] for b in bd.values() for row in b.get("by_contrast", [])):
        lines += [("### By lesion contrast (mean change of display luma over the lesion, grey levels; "
                   "lesions by their peak)"), "",
                  breakdown_table({s: b["by_contrast"] for s, b in bd.items()},
                                  [("auc_class_raw", "class AUC"), ("auc_presence_raw", "presence AUC")]), "",
                  "### Close-view lesions by their contrast over the first second of close view", "",
                  onset_table({s: b["by_onset_contrast"] for s, b in bd.items()}), ""]
    else:
        lines += ["No lesion contrast in the truth files (older CSVs): no breakdown by contrast.", ""]
    if any(b["by_evidence"] for b in bd.values()):
        lines += [("### By WLI evidence strength (tertiles of the close-view lesions; frames and lesions with "
                   "close view only)"), "",
                  breakdown_table({s: b["by_evidence"] for s, b in bd.items()}, [("auc_class_raw", "class AUC")]), ""]
    else:
        lines += ["No WLI evidence in the truth files (older CSVs): no breakdown by evidence.", ""]
    for name, v in rep["videos"].items():
        lines += [f"## {name} ({v['analysed']}/{v['frames']} frames analysed)", "", table(v["metrics"]), ""]
        if not rep.get("no_plots"):
            lines += [f"![timeline](timelines/{Path(name).stem}.png)", ""]
    gaps = [(v, g) for v, r in rep["videos"].items() for g in r.get("gaps", [])]
    if gaps:
        lines += ["## Input gaps", "", *[f"- {v}: {g['seconds']} s without input after frame {g['after_frame']} "
                                         f"({g['reason']})" for v, g in gaps], ""]
    if rep["problems"]:
        lines += ["## Problems", "", *[f"- {p}" for p in rep["problems"]], ""]
    return "\n".join(lines)


def _total(rep: dict, key: str) -> float:
    first = next(iter(rep["pooled"].values()), {})
    return float(first.get(key) or 0.0)
