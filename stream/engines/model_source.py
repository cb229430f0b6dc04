"""Where an engine's model comes from: an exported student on disk, or a module in memory.

The exported student's format (its files, metadata and ONNX export) belongs to the training
core's ``pagkd_core.student``, the only module of the training core the runtime imports. Engines
that need an ONNX graph and find none beside the student export one into the cache, keyed by the
weights' hash.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pagkd_core.student import cache_meta, check_run_meta, export_onnx, load_student, read_meta, sibling


def cache_dir() -> Path:
    """Disk cache for exported graphs, built TensorRT engines and ``auto``'s engine choices:
    ``$PAGKD_CACHE``, else ``$XDG_CACHE_HOME/pagkd``, else ``~/.cache/pagkd``."""
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    root = Path(os.environ.get("PAGKD_CACHE") or Path(xdg) / "pagkd")
    root.mkdir(parents=True, exist_ok=True)
    return root


@dataclass
class ModelSource:
    """Metadata plus lazy access to the torch module and ONNX graphs of one student."""

    meta: dict
    name: str
    stem: Path | None = None
    module: Any = None                       # set for in-memory sources
    onnx: Path | None = None
    int8_onnx: Path | None = None
    resized: bool = False                    # run at another size than exported (at_input_size)
    _hash: str | None = field(default=None, repr=False)

    @classmethod
    def from_path(cls, path: str | os.PathLike) -> ModelSource:
        stem, meta = read_meta(path)
        onnx, int8 = sibling(stem, ".onnx"), sibling(stem, ".int8.onnx")
        return cls(meta=meta, name=stem.name, stem=stem,
                   onnx=onnx if onnx.is_file() else None, int8_onnx=int8 if int8.is_file() else None)

    @classmethod
    def from_module(cls, module: Any, meta: dict, name: str = "in-memory",
                    onnx: str | os.PathLike | None = None,
                    int8_onnx: str | os.PathLike | None = None) -> ModelSource:
        meta = {"num_classes": len(meta["class_names"]), **meta}
        return cls(meta=check_run_meta(meta, name), name=name, module=module.eval(),
                   onnx=Path(onnx) if onnx else None, int8_onnx=Path(int8_onnx) if int8_onnx else None)

    def at_input_size(self, size: tuple[int, int]) -> ModelSource:
        """This student run at another input size (a CNN with global pooling runs at any size).
        Exported graphs have their size baked in: they are dropped, and the ONNX engine exports
        one at the new size into the cache (the cache key includes the size)."""
        size = (int(size[0]), int(size[1]))
        if size == tuple(self.meta["input_size"]):
            return self
        return dataclasses.replace(self, meta={**self.meta, "input_size": list(size)}, onnx=None, int8_onnx=None,
                                   resized=True, _hash=None)

    # -- torch -----------------------------------------------------------------------------
    def load_torch(self):
        """A fresh eval-mode torch module on CPU (in-memory sources return their module)."""
        if self.module is not None:
            return self.module
        model, _ = load_student(self.stem)
        return model.eval()

    def weights_hash(self) -> str:
        """sha256 of the weights and of the run metadata (16 hex chars): the cache key for derived
        graphs and engines. The run metadata includes the input transform (normalisation and the
        optional transpose flag): a graph or int8 calibration made for one input transform is
        never reused for another, though the weights are the same."""
        if self._hash is None:
            h = hashlib.sha256()
            weights = sibling(self.stem, ".safetensors") if self.stem else None
            if weights is not None and weights.is_file():
                with open(weights, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
            else:
                for k, v in self.load_torch().state_dict().items():
                    h.update(k.encode())
                    h.update(v.detach().cpu().contiguous().numpy().tobytes())
            h.update(json.dumps(cache_meta(self.meta), sort_keys=True).encode())
            self._hash = h.hexdigest()[:16]
        return self._hash

    # -- ONNX ------------------------------------------------------------------------------
    def onnx_path(self) -> Path:
        """The fp32 ONNX graph: the exported sibling, else one exported into the cache."""
        if self.onnx is not None and self.onnx.is_file():
            return self.onnx
        out = cache_dir() / "onnx" / f"{self.name}-{self.weights_hash()}.onnx"
        if not out.is_file():
            export_onnx(self.load_torch(), out, tuple(self.meta["input_size"]))
        self.onnx = out
        return out

    def int8_onnx_path(self) -> Path | None:
        """The calibrated int8 graph next to this student, unless its report says it was made from
        other weights (a student re-exported over the old one): a stale graph is never used."""
        if self.int8_onnx is None or not self.int8_onnx.is_file():
            return None
        report = self.int8_onnx.with_suffix(".json")
        made_from = json.loads(report.read_text()).get("weights_hash") if report.is_file() else None
        if made_from is not None and made_from != self.weights_hash():
            import warnings

            warnings.warn(f"{self.int8_onnx} was calibrated for other weights than {self.name}'s; "
                          f"ignored (re-run python -m benchmarks.int8 to make a new one)", stacklevel=2)
            return None
        return self.int8_onnx

    def default_int8_path(self) -> Path:
        """Where a calibrated int8 graph of this student belongs: next to it (where ``auto`` finds
        it), else, or when calibrated at another input size than exported, in the cache."""
        if self.stem is not None and not self.resized and os.access(self.stem.parent, os.W_OK):
            return sibling(self.stem, ".int8.onnx")
        return cache_dir() / "onnx" / f"{self.name}-{self.weights_hash()}.int8.onnx"

