"""The sha256 of a file's bytes, read in chunks: one helper for every content key in the project.

Cache keys (derived graphs, engine choices, prediction caches), the soup's "same teacher" check
and the provenance of imported checkpoints all name a file by its content. No heavy imports: the
runtime takes it without the training core.
"""

from __future__ import annotations

import hashlib
import os

CHUNK = 1 << 20


def update_from_file(h, path: str | os.PathLike) -> None:
    """Feed ``path``'s bytes into the hash object ``h`` (several files can go into one key)."""
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)


def file_sha256(path: str | os.PathLike, chars: int | None = None) -> str:
    """Hex sha256 of the file's bytes; ``chars``: only the first so many hex digits (a cache key)."""
    h = hashlib.sha256()
    update_from_file(h, path)
    return h.hexdigest()[:chars]
