"""pagkd_core.digest: the one file-content hash, read in chunks."""
import hashlib

import numpy as np

from pagkd_core.digest import CHUNK, file_sha256, update_from_file


def test_file_sha256_matches_hashlib_over_several_chunks(tmp_path):
    data = np.random.default_rng(0).bytes(2 * CHUNK + 123)  # three reads, the last one short
    path = tmp_path / "weights.safetensors"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    assert file_sha256(path, 16) == hashlib.sha256(data).hexdigest()[:16]
    h = hashlib.sha256(b"key:")
    update_from_file(h, path)
    assert h.hexdigest() == hashlib.sha256(b"key:" + data).hexdigest()
