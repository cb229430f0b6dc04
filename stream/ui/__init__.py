"""The Gradio live UI: ``python -m stream ui`` (see docs/ui.md).

app.py      options, launch (main(argv) is what ``python -m stream ui`` calls)
layout.py   the page: live view, controls, timeline, stats; replay-evaluation tab
live.py     low-latency live view: JPEG once per frame -> MJPEG route on Gradio's server
runner.py   the server-side live stream, run by the runtime's Pipeline
controls.py page sliders -> the smoother's and the alert machine's configs
replay.py   replay evaluation of an upload (Pipeline + stream.video_eval)
session.py  upload checks and per-session files
plots.py    the live timeline figure
"""
