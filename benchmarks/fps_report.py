"""The fps benchmark's printed report: markdown tables and the issue's targets, from its JSON."""
from __future__ import annotations

from stream.video_metrics_report import md_table  # the reports' one table format


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 10 else f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.1f}"
    return str(v)


def _table(headers: list[str], rows: list[list]) -> str:
    return md_table(headers, rows, cell=_cell)


def decode_table(rows: list[dict]) -> str:
    body = [[r["clip"], r["codec"], r["reader"], r["threads"], r["output"], r.get("fps"), r.get("error", "")]
            for r in rows if "clip" in r]
    notes = [r["note"] for r in rows if "note" in r]
    return _table(["clip", "codec in file", "reader", "threads", "output", "frames/s", "error"], body) + \
        "".join(f"\n\nNote: {n}" for n in notes)


def preprocess_table(rows: list[dict]) -> str:
    return _table(["clip", "implementation", "batch", "p50 ms/call", "p99 ms/call", "frames/s"],
                  [[r["clip"], r["impl"], r["batch"], r["p50_ms"], r["p99_ms"], r["frames_s"]] for r in rows])


def inference_table(rows: list[dict]) -> str:
    body = []
    for r in rows:
        if "skipped" in r:
            body.append([r["engine"], "-", None, None, None, "skipped: " + r["skipped"][:90]])
        elif "error" in r:
            body.append([r["engine"], r["batch"], None, None, None, "error: " + r["error"][:90]])
        else:
            body.append([r["engine"], r["batch"], r["p50_ms"], r["p99_ms"], r["img_s"], f"setup {r['setup_s']} s"])
    return _table(["engine", "batch", "p50 ms", "p99 ms", "images/s", "note"], body)


def smoothing_table(rows: list[dict]) -> str:
    return _table(["stage", "p50 us/frame", "p99 us/frame", "frames/s"],
                  [[r["stage"], r["p50_us"], r["p99_us"], r["per_s"]] for r in rows])


def _lat(row: dict) -> list:
    lat = row.get("latency") or {}
    missed = row.get("dropped", 0) + row.get("never_reached", 0)
    return [lat.get("p50_ms"), lat.get("p90_ms"), lat.get("p99_ms"), lat.get("max_ms"),
            f"{missed}/{row.get('offered')}", "yes" if row.get("keeps_up") else "no"]


def e2e_tables(e2e: dict) -> str:
    rep = e2e["replay"]
    eng = e2e["engine"]
    out = [f"Engine: {eng['engine']} {eng['precision']} on {eng['device']}, clip {e2e['clip']}.", "",
           _table(["replay (as fast as possible)", "frames/s", "x naive", "x decode ceiling"],
                  [[f"pipeline (batch {rep['pipeline']['batch']})", rep["pipeline"]["fps"],
                    rep["speedup_vs_naive"], rep["fraction_of_ceiling"]],
                   ["naive baseline", rep["naive"]["fps"], 1.0, None],
                   ["decode ceiling (decoded pictures, no pixel conversion)", rep["decode_ceiling_fps"], None, 1.0],
                   ["decode to full-frame RGB/BGR arrays", (e2e.get("decode_to_arrays") or {}).get("fps"),
                    None, None]]),
           ""]
    body = []
    for p in e2e["paced"]:
        body.append([f"{p['fps']} fps, pipeline", *_lat(p["pipeline"]), p["p99_naive_over_pipeline"]])
        body.append([f"{p['fps']} fps, naive", *_lat(p["naive"]), 1.0])
    out += [_table(["paced live feed, 1 stream", "p50 ms", "p90 ms", "p99 ms", "max ms", "missed/offered",
                    "keeps up", "naive p99 / p99"], body), ""]
    conc = e2e["concurrent"]
    body = []
    for who in ("pipeline", "naive"):
        for r in conc[who]["runs"]:
            body.append([who, r["streams"], *_lat(r)])
    out += [_table([f"{conc['fps']} fps streams", "N", "p50 ms", "p90 ms", "p99 ms", "max ms", "missed/offered",
                    "keeps up"], body), "",
            (f"Largest N keeping up: pipeline {conc['pipeline']['max_streams_keeping_up']}, naive "
             f"{conc['naive']['max_streams_keeping_up']} (ratio {conc['ratio']}); keeps up = at most "
             f"{e2e['keep_up_rule']['max_drop']:.0%} of frames missed and p99 <= "
             f"{e2e['keep_up_rule']['max_p99_ms']:g} ms.")]
    if e2e.get("breakdown"):
        out += ["", breakdown_table(e2e["breakdown"])]
    return "\n".join(out)


def breakdown_table(bd: dict) -> str:
    """Where the replay's CPU goes per frame (benchmarks.fps_breakdown)."""
    rows = [[s["stage"], s["cpu_ms_per_frame"], None if s["share"] is None else f"{s['share']:.0%}"]
            for s in bd["stages"]]
    rows.append(["replay end to end (stream.pipeline, all threads)", bd["replay_cpu_ms_per_frame"], "100%"])
    head = (f"Where the replay's CPU goes ({bd['rounds']} rounds of {bd['frames_per_round']} frames, batch "
            f"{bd['batch']}; stages timed one after another with the runtime's own objects, the rest = the "
            f"threaded replay minus their sum: benchmarks/fps_breakdown.py):")
    same = (f"Same rounds: replay {bd['replay_fps']} frames/s, decode-only (the runtime's file source) "
            f"{bd['decode_only_fps']} frames/s ({bd['decode_only_cpu_ms_per_frame']} CPU ms/frame): "
            f"**{bd['replay_over_decode_only']}** of decode-only.")
    return "\n".join([head, "", _table(["stage", "CPU ms/frame", "share"], rows), "", same])


def auto_choice_lines(ac: dict) -> list[str]:
    """The host, the engine ``--engine auto`` runs on it, and how it compares in this run."""
    out = [f"Host: {ac['host']}. `--engine auto` here runs **{ac['chosen']}**."
           + (f" The runtime's probe: `{ac['line']}`." if ac.get("line") else "")]
    fast, eager = ac.get("vs_fastest") or {}, ac.get("vs_eager") or {}
    if "ratio" in fast:
        out.append(f"Fastest engine a pipeline can run at batch {fast['batch']} in this run: {ac['fastest']}; "
                   f"auto / fastest **{fast['ratio']}**" + (" (alternating rounds)." if "rounds" in fast else "."))
    if "ratio" in eager:
        out.append(f"auto / torch eager fp32 at batch {eager['batch']}: **{eager['ratio']}**.")
    return [" ".join(out), ""]


def _infer(rows, engine: str, batch: int):
    return next((r for r in rows if r.get("engine") == engine and r.get("batch") == batch and "img_s" in r), None)


def targets(result: dict) -> list[dict]:
    """The issue's targets that this run can speak to, each with its value and verdict."""
    out = []
    inf = result.get("stages", {}).get("inference", [])
    device = result["environment"]["device"]

    def add(name, value, target, ok):
        met = None if value is None or ok is None else bool(ok)  # None: nothing to judge, or report only
        out.append({"target": name, "value": value, "goal": target, "met": met})

    if device == "cpu":
        pair = result.get("stages", {}).get("int8_vs_eager") or {}
        if "ratio" in pair:  # alternating rounds: the fair ratio on a shared machine
            ratio, batch = pair["ratio"], pair["batch"]
        else:
            a, b, batch = _infer(inf, "onnxruntime-int8", 8), _infer(inf, "torch-fp32", 8), 8
            ratio = round(a["img_s"] / b["img_s"], 2) if a and b else None
        add(f"ONNX Runtime int8 / torch eager fp32 images/s at batch {batch}", ratio, ">= 3", ratio and ratio >= 3)
        drop = (result.get("int8_accuracy") or {}).get("auc_drop")
        add("int8 AUC drop on the synthetic held-out images (trained size)", None if drop is None else round(drop, 4),
            "< 0.01", drop is not None and drop < 0.01)
        ac = result.get("stages", {}).get("auto_choice") or {}
        fast, eager = ac.get("vs_fastest") or {}, ac.get("vs_eager") or {}
        if "ratio" in fast:
            add(f"--engine auto ({ac['chosen']}) / fastest engine ({ac['fastest']}) images/s at batch "
                f"{fast['batch']}", fast["ratio"], ">= 0.9", fast["ratio"] >= 0.9)
        if "ratio" in eager:
            # issue 17's goal depends on the instruction set: int8 pays off far more with AVX-512 VNNI
            goal = 3.0 if "avx512_vnni" in ac["isa"] else 1.5
            add(f"chosen engine ({ac['chosen']}) / torch eager fp32 images/s at batch {eager['batch']} "
                f"({'AVX-512 VNNI' if goal == 3 else 'no AVX-512 VNNI'} host)", eager["ratio"], f">= {goal:g}",
                eager["ratio"] >= goal)
    else:
        fp16 = [r for r in inf if "fp16" in r.get("engine", "") and r.get("batch") == 1 and "p50_ms" in r]
        best = min((r["p50_ms"] for r in fp16), default=None)
        add("fp16 batch-1 p50 ms (best engine)", best, "<= 2 ms", best is not None and best <= 2)
        top = max((r["img_s"] for r in inf if "img_s" in r), default=None)
        add("best batched images/s", top, ">= 3000", top is not None and top >= 3000)
    for e2e in result.get("end_to_end", []):
        clip = e2e["clip"]
        add(f"{clip} replay / naive", e2e["replay"]["speedup_vs_naive"], ">= 3",
            (e2e["replay"]["speedup_vs_naive"] or 0) >= 3)
        ratio = (e2e.get("breakdown") or {}).get("replay_over_decode_only")
        if ratio is not None:
            add(f"{clip} replay / decode-only (runtime's file source, same rounds)", ratio, ">= 0.75", ratio >= 0.75)
        for p in e2e["paced"]:
            p99 = p["pipeline"]["latency"]["p99_ms"]
            if device == "cpu":
                add(f"{clip} paced {p['fps']} fps p99 ms", p99, "report", None)
            elif p["fps"] == 60:
                add(f"{clip} paced 60 fps p99 ms", p99, "<= 16 ms (GPU target)", p99 is not None and p99 <= 16)
        n = e2e["concurrent"]["pipeline"]["max_streams_keeping_up"]
        add(f"{clip} concurrent {e2e['concurrent']['fps']} fps streams keeping up", n,
            ">= 8 (GPU target)" if device != "cpu" else "report", n >= 8 if device != "cpu" else None)
    return out


def _verdict(met: bool | None) -> str:
    return "-" if met is None else "met" if met else "not met"


def report(result: dict) -> str:
    from benchmarks.env import describe

    env = result["environment"]
    parts = [f"# fps benchmark: {result['model']['label']} on {env['device']}",
             f"{describe(env)}", f"command: {result['command']}", ""]
    st = result.get("stages", {})
    for key, title, fn in (("decode", "Decode", decode_table), ("preprocess", "Preprocess", preprocess_table),
                           ("inference", "Inference", inference_table), ("smoothing", "Smoothing and alerts",
                                                                         smoothing_table)):
        if st.get(key):
            parts += [f"## {title}", fn(st[key]), ""]
        if key == "inference" and "ratio" in st.get("int8_vs_eager", {}):
            p = st["int8_vs_eager"]
            parts += [(f"Alternating rounds at batch {p['batch']} ({p['rounds']} rounds each): {p['other']} "
                      f"{p[p['other']]['img_s']} images/s, {p['base']} {p[p['base']]['img_s']} images/s: "
                      f"**{p['ratio']}x**."), ""]
        if key == "inference" and st.get("auto_choice"):
            parts += auto_choice_lines(st["auto_choice"])
    for e2e in result.get("end_to_end", []):
        parts += [f"## End to end: {e2e['clip']}", e2e_tables(e2e), ""]
    if result.get("targets"):
        parts += ["## Targets", _table(["target", "value", "goal", "met"],
                                       [[t["target"], t["value"], t["goal"], _verdict(t["met"])]
                                        for t in result["targets"]])]
    if result.get("notes"):
        parts += ["", *[f"Note: {n}" for n in result["notes"]]]
    acc = result.get("int8_accuracy")
    if acc:
        keys = ("auc_fp32", "auc_int8", "auc_drop", "top1_agreement", "images", "eval_lesions", "calib_frames",
                "input_size", "fmt", "activations", "weights", "per_channel", "method")
        parts += ["", "int8 accuracy cost (benchmarks.int8.calibrate_and_measure, synthetic held-out lesions): "
                  + ", ".join(f"{k} {acc[k]:.4g}" if isinstance(acc[k], float) else f"{k} {acc[k]}"
                              for k in keys if k in acc)]
    parts += ["", f"total {result['elapsed_s']} s"]
    return "\n".join(parts)
