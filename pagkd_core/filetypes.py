"""Which files are pictures and which are videos, by their name: one list each for the project.

The training core reads picture folders; the runtime replays picture folders and video files,
and its int8 calibration and video evaluation pick the videos out of a folder. Nothing is
imported here, so the runtime takes these lists without the training core's data pipeline.
"""

from __future__ import annotations

# What PIL reads in any mode (pagkd_core.data.images converts each to RGB).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

# The common containers: all that the UI's upload gate accepts (stream/ui/session.py). A file
# from outside gets a deliberately narrow allowlist; PyAV must still decode a frame of it.
UPLOAD_VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mkv", ".avi", ".mov", ".ts", ".mts", ".webm", ".mpg", ".mpeg")
# Everything FFmpeg (PyAV) opens as a video from disk: the common containers, the broadcast and
# studio ones (M2TS, MXF, NUT) and raw H.264/HEVC elementary streams.
VIDEO_EXTENSIONS = UPLOAD_VIDEO_EXTENSIONS + (".m2ts", ".mxf", ".nut", ".h264", ".264", ".hevc", ".265")

# A file still being written carries this mark before its extension (``clip.partial.mp4``: how
# pagkd_core.synth.video names a procedure clip and its truth until they are complete), so nothing
# that lists a folder for finished videos may take it.
PARTIAL_MARK = ".partial"


def is_partial(name: str) -> bool:
    """Whether a file name is one still being written (see ``PARTIAL_MARK``)."""
    stem, dot, _ = name.rpartition(".")
    return bool(dot) and stem.endswith(PARTIAL_MARK)
