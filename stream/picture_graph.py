"""One FFmpeg filter graph over decoded pictures: the shared set-up of the model path's crop and
scale (stream.preprocess) and the upright turn of phone clips (stream.sources.rotation)."""

from __future__ import annotations

import itertools


def picture_graph(pic, filters: list[tuple[str, str | None]]):
    """A configured ``av.filter.Graph``: a source for pictures shaped like ``pic`` (a PyAV
    ``VideoFrame``), then ``filters`` as (name, args) in order, then a sink."""
    import av

    g = av.filter.Graph()
    chain = [
        g.add(
            "buffer",
            video_size=f"{pic.width}x{pic.height}",
            pix_fmt=pic.format.name,
            time_base="1/90000",
            pixel_aspect="1/1",
            # The picture's colour tags ride along, so conversions after the graph match Frame.rgb
            # (BT.601/709, range).
            colorspace=str(int(pic.colorspace)),
            range=str(int(pic.color_range)),
        )
    ]
    chain += [g.add(name, args) for name, args in filters]
    chain.append(g.add("buffersink"))
    for a, b in itertools.pairwise(chain):
        a.link_to(b)
    g.configure()
    return g
