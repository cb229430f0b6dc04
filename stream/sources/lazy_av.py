"""PyAV, imported on first use: the file, capture and network sources decode with it.

Its own module rather than base.py, which av_reader imports: the loader and the reader it loads
stay out of an import circle. Folders, the synthetic generator and pushed pictures never come
here, so they work on a host without PyAV.
"""

from __future__ import annotations

from stream.sources.base import SourceError


def av_source_class() -> type:
    """``stream.sources.av_reader.AVSource``; a one-line SourceError where PyAV is not installed."""
    try:
        from stream.sources.av_reader import AVSource
    except ModuleNotFoundError as e:
        if e.name != "av":
            raise
        raise SourceError(
            "video files, capture devices and network streams need PyAV: pip install av"
        ) from None
    return AVSource
