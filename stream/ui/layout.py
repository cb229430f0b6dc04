"""The Gradio page: live view + controls + timeline + stats, and the replay-evaluation tab.

The live picture is a plain <img> on the MJPEG endpoint (stream/ui/live.py); Gradio only
carries the slow things: control changes, a 2 Hz stats/label refresh, a 1 Hz plot.
"""

from __future__ import annotations

import html
import time
from pathlib import Path

import gradio as gr
import numpy as np

from pagkd_core.outputs import lesion_classes
from stream.alerts import NBI_NOT_ANALYSED, NO_LESION_STATE, UNCERTAIN, shown_state
from stream.ui.controls import SMOOTHING_MODES
from stream.ui.plots import timeline_figure
from stream.ui.session import UploadError, check_labels, check_video, human

CSS = """
#live-view img {width: 100%; height: auto; background: #111; border-radius: 6px; display: block;}
#live-label {font: 600 1.3em system-ui, sans-serif; padding: .5em .8em; border-radius: 6px;
             background: #e8eef4; color: #223;}
#live-label.alert {background: #c62828; color: #fff;}
#live-label.uncertain {background: #f9a825; color: #222;}
#live-label.quiet {font-size: 1em; font-weight: 400; color: #667;}
#stats-table {width: 100%;}
#stats-table td, #stats-table th {padding: 2px 10px; font-size: .9em;}
#stats-table td {font-variant-numeric: tabular-nums; text-align: right;}
.ui-error {color: #b71c1c; font-weight: 600;}
"""

SOURCE_HINT = (
    "`demo` (bundled synthetic video), a video file path, a capture device (`/dev/video0`), "
    "a network URL (`rtsp://`, `udp://`, `srt://`, `http://`), or `webcam` (this browser's camera)."
)


def live_view_html(src: str = "live/mjpeg") -> str:
    # Relative URL: works behind a root path or a share tunnel as well as on localhost.
    return f'<div id="live-view"><img id="live-img" src="{src}" alt="live annotated video"></div>'


def label_html(s: dict) -> str:
    state = s.get("state") or "waiting"
    quiet = state in (NO_LESION_STATE, NBI_NOT_ANALYSED)  # nothing to act on: said in small grey
    cls = "alert" if s.get("alert") else ("uncertain" if state == UNCERTAIN else "quiet" if quiet else "")
    conf = s.get("confidence")
    conf_txt = f" {conf:.2f}" if isinstance(conf, float) and not quiet else ""
    shown = shown_state(state, s.get("modality", "WLI"))
    alert_txt = " - ALERT" if s.get("alert") else ""
    paused = " (paused)" if s.get("paused") else ""
    return (
        f'<div id="live-label" class="{cls}" data-state="{html.escape(state)}" '
        f'data-alert="{int(bool(s.get("alert")))}">{html.escape(shown)}{conf_txt}{alert_txt}{paused}</div>'
    )


def stats_html(s: dict) -> str:
    cells = [
        ("input fps", "input_fps", f"{s['input_fps']:.1f}"),
        ("processed fps", "processed_fps", f"{s['processed_fps']:.1f}"),
        ("latency p50 (ms)", "latency_p50_ms", f"{s['latency_p50_ms']:.1f}"),
        ("latency p99 (ms)", "latency_p99_ms", f"{s['latency_p99_ms']:.1f}"),
        ("not analysed (newest frame only)", "dropped_source", s["dropped_source"]),
        ("dropped by the display", "dropped_display", s["dropped_display"]),
        ("frames processed", "frames", s["frames"]),
        ("alert frames (timeline)", "alert_frames", s.get("alert_frames", 0)),
        ("engine", "engine", f"{s['engine']} {s.get('precision', '')}".strip()),
        ("device", "device", s["device"]),
        ("JPEG encode p50 (ms)", "encode_ms", f"{s.get('encode_ms', 0.0):.1f}"),
        ("live-view pages open", "viewers", s.get("viewers", 0)),
    ]
    td = [f'<th>{k}</th><td data-k="{key}">{html.escape(str(v))}</td>' for k, key, v in cells]
    body = f'<tr><th>source</th><td data-k="source" colspan="3">{html.escape(str(s["source"]))}</td></tr>'
    body += "".join(f"<tr>{a}{b}</tr>" for a, b in zip(td[::2], td[1::2]))
    err = f'<p class="ui-error" id="live-error">{html.escape(s["error"])}</p>' if s.get("error") else ""
    return f'<table id="stats-table">{body}</table>{err}'


def build_blocks(ctx) -> gr.Blocks:
    """`ctx` is the app context (stream/ui/app.py:AppContext): runner, engine, files, config."""
    cfg, runner = ctx.cfg, ctx.runner
    c0 = runner.controls
    # The call's confidence (over the lesion classes, stream.alerts) never goes below 1/K.
    n_call = len(lesion_classes(ctx.class_names))
    th_min = round(1.0 / n_call, 2)

    with gr.Blocks(title="PaGKD live", delete_cache=(600, 3600)) as demo:
        gr.Markdown("## PaGKD live lesion classifier - **synthetic data, research use only**")
        with gr.Tab("Live"), gr.Row():
            with gr.Column(scale=3):
                gr.HTML(live_view_html())
                label = gr.HTML(label_html({}))
                plot = gr.Plot(label="timeline", elem_id="timeline")
                stats = gr.HTML(elem_id="stats")
            with gr.Column(scale=2):
                source = gr.Dropdown(
                    choices=ctx.source_choices,
                    value=runner.spec,
                    allow_custom_value=True,
                    label="Source",
                    info=SOURCE_HINT,
                    elem_id="source",
                )
                with gr.Row():
                    switch = gr.Button("Switch source", elem_id="switch")
                    pause = gr.Button("Pause", elem_id="pause")
                source_msg = gr.Markdown(elem_id="source-msg")
                with gr.Accordion("Browser webcam", open=False):
                    cam = gr.Image(
                        sources=["webcam"], streaming=True, type="numpy", label="webcam", elem_id="webcam"
                    )
                threshold = gr.Slider(
                    th_min,
                    1.0,
                    value=c0.threshold,
                    step=0.01,
                    label="Alert threshold (top-class confidence)",
                    elem_id="threshold",
                )
                band = gr.Slider(
                    0.0,
                    0.5,
                    value=c0.uncertain_band,
                    step=0.01,
                    label="Uncertain band below the threshold (shown as 'uncertain': no call)",
                    elem_id="band",
                )
                mode = gr.Dropdown(
                    list(SMOOTHING_MODES), value=c0.smoothing, label="Smoothing", elem_id="smoothing"
                )
                strength = gr.Slider(
                    0.0,
                    1.0,
                    value=c0.strength,
                    step=0.05,
                    label="Smoothing strength (0: none, 1: strongest)",
                    elem_id="strength",
                )
                min_dur = gr.Slider(
                    0.0,
                    2.0,
                    value=c0.min_duration_s,
                    step=0.05,
                    label="Minimum alert duration (s)",
                    elem_id="min-dur",
                )
        with gr.Tab("Replay evaluation"):
            gr.Markdown(
                f"Upload a video (max {human(cfg.max_upload_bytes)}; {', '.join(ctx.video_exts)}) "
                "and optionally its per-frame labels CSV (`frame,lesion_visible,class,...`). "
                "The current live settings are used. Files are deleted when you close the page."
            )
            with gr.Row():
                up_video = gr.File(label="Video", file_types=list(ctx.video_exts), elem_id="replay-video")
                up_labels = gr.File(
                    label="Labels CSV (optional)", file_types=[".csv"], elem_id="replay-labels"
                )
            run = gr.Button("Run replay", variant="primary", elem_id="replay-run")
            replay_msg = gr.Markdown(elem_id="replay-msg")
            with gr.Row():
                out_video = gr.Video(label="Annotated video", elem_id="replay-out-video")
                with gr.Column():
                    out_files = gr.File(
                        label="Downloads (predictions log, report)",
                        file_count="multiple",
                        elem_id="replay-files",
                    )
            report = gr.Markdown(elem_id="replay-report")
            eval_plot = gr.Image(
                label="Evaluation timeline (with labels)",
                type="filepath",
                elem_id="replay-plot",
                interactive=False,
            )

        # -- handlers -----------------------------------------------------------------
        def refresh_fast():
            s = runner.stats()
            return label_html(s), stats_html(s)

        last_plot = {"t": -1.0, "fig": None}

        def refresh_plot():
            # Several open pages share one rendering per tick.
            now = time.monotonic()
            if last_plot["fig"] is not None and now - last_plot["t"] < 0.8:
                return last_plot["fig"]
            c = runner.controls
            last_plot["t"], last_plot["fig"] = (
                now,
                timeline_figure(
                    runner.timeline(),
                    c.threshold,
                    c.uncertain_band,
                    title=f"live timeline ({runner.spec}; red: alert) - synthetic data",
                    binary=n_call == 2,
                ),
            )
            return last_plot["fig"]

        def on_switch(spec):
            try:
                if not (spec or "").strip():
                    raise ValueError("type or pick a source first")
                runner.switch(ctx.policy.check(spec))  # refused before anything is opened
                return f"Now showing **{html.escape(spec)}**."
            except Exception as e:  # noqa: BLE001 - one line for the user; the old source keeps running
                msg = f"Cannot open {spec}: {e}"
                return f'<span class="ui-error" id="source-error">{html.escape(msg)}</span>'

        def on_pause():
            runner.set_paused(not runner.paused)
            return gr.update(value="Resume" if runner.paused else "Pause")

        def on_controls(th, b, m, st, md):
            try:
                runner.configure(threshold=th, uncertain_band=b, smoothing=m, strength=st, min_duration_s=md)
            except ValueError as e:
                gr.Warning(str(e))

        def on_webcam(img):
            if img is None:
                return
            if runner.spec != "webcam":
                runner.switch("webcam")
            runner.push(np.asarray(img, dtype=np.uint8))

        # gr.Progress() as a default is Gradio's way of asking for a progress bar.
        def on_replay(video, labels, request: gr.Request, progress=gr.Progress()):  # noqa: B008
            sid = request.session_hash if request is not None else "anon"
            try:
                if video is None:
                    raise UploadError("choose a video file first")
                vpath = ctx.files.adopt(sid, video)
                probe = check_video(vpath, cfg.max_upload_bytes)
                lpath = ctx.files.adopt(sid, labels) if labels else None
                if lpath is not None:
                    check_labels(lpath, cfg.max_upload_bytes)
                res = ctx.replay(probe, lpath, ctx.files.dir(sid), progress)
            except UploadError as e:
                gr.Warning(str(e))
                return (
                    f'<span class="ui-error" id="upload-error">Upload refused: {html.escape(str(e))}</span>',
                    None,
                    None,
                    "",
                    None,
                )
            except Exception as e:  # noqa: BLE001 - trouble mid-file etc.: report it, keep serving
                gr.Warning(str(e))
                return (
                    f'<span class="ui-error" id="upload-error">Replay failed: {html.escape(str(e))}</span>',
                    None,
                    None,
                    "",
                    None,
                )
            msg = (
                f"Done: {Path(probe.path).name}, {probe.width}x{probe.height}, "
                f"{res.frames} frames in {res.seconds:.1f} s."
            )
            return msg, res.video, [str(p) for p in res.downloads], res.report_md, res.plot

        fast = gr.Timer(0.5)
        fast.tick(refresh_fast, outputs=[label, stats], show_progress="hidden", queue=False)
        slow = gr.Timer(1.0)
        slow.tick(refresh_plot, outputs=[plot], show_progress="hidden")
        demo.load(refresh_fast, outputs=[label, stats])
        switch.click(on_switch, inputs=[source], outputs=[source_msg])
        pause.click(on_pause, outputs=[pause], queue=False)
        controls = [threshold, band, mode, strength, min_dur]
        for comp in controls:
            comp.change(on_controls, inputs=controls, queue=False, show_progress="hidden")
        cam.stream(
            on_webcam,
            inputs=[cam],
            outputs=None,
            stream_every=0.066,
            concurrency_limit=1,
            show_progress="hidden",
        )
        run.click(
            on_replay,
            inputs=[up_video, up_labels],
            outputs=[replay_msg, out_video, out_files, report, eval_plot],
            concurrency_limit=1,
        )

        def on_upload(f, request: gr.Request):
            ctx.files.track(request.session_hash, f)

        up_video.upload(on_upload, inputs=[up_video], queue=False, show_progress="hidden")
        up_labels.upload(on_upload, inputs=[up_labels], queue=False, show_progress="hidden")

        def on_unload(request: gr.Request):
            ctx.files.drop(request.session_hash)  # this page's uploads and outputs

        demo.unload(on_unload)
    return demo
