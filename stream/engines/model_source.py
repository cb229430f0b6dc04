"""Where an engine's model comes from: an exported student on disk, or a module in memory.

An exported student is ``<stem>.safetensors`` + ``<stem>.json`` (docs/architecture.md), with
optional ``<stem>.onnx`` and, once calibrated, ``<stem>.int8.onnx``. Engines that need an ONNX
graph and find none export one into the cache, keyed by the weights' hash.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REQUIRED_META = ("num_classes", "class_names", "input_size", "mean", "std")


def cache_dir() -> Path:
    """Disk cache for exported graphs and built TensorRT engines (``$PAGKD_CACHE`` overrides)."""
    root = Path(os.environ.get("PAGKD_CACHE", Path.home() / ".cache" / "pagkd"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def student_stem(path: str | os.PathLike) -> Path:
    p = Path(path)
    for suffix in (".int8.onnx", ".safetensors", ".json", ".onnx"):
        if p.name.endswith(suffix):
            return p.with_name(p.name[: -len(suffix)])
    return p


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
        stem = student_stem(path)
        meta_path = stem.parent / (stem.name + ".json")
        if not meta_path.is_file():
            raise FileNotFoundError(f"no student metadata at {meta_path}; pass the .json/.safetensors of an "
                                    f"exported student (python -m pagkd_core export)")
        meta = json.loads(meta_path.read_text())
        if not str(meta.get("format", "")).startswith("pagkd-student/"):
            raise ValueError(f"{meta_path} is not a pagkd student (format={meta.get('format')!r})")
        onnx = stem.parent / (stem.name + ".onnx")
        int8 = stem.parent / (stem.name + ".int8.onnx")
        return cls(meta=_check_meta(meta, meta_path), name=stem.name, stem=stem,
                   onnx=onnx if onnx.is_file() else None, int8_onnx=int8 if int8.is_file() else None)

    @classmethod
    def from_module(cls, module: Any, meta: dict, name: str = "in-memory",
                    onnx: str | os.PathLike | None = None,
                    int8_onnx: str | os.PathLike | None = None) -> ModelSource:
        meta = {"num_classes": len(meta["class_names"]), **meta}
        return cls(meta=_check_meta(meta, name), name=name, module=module.eval(),
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
        from pagkd_core.export import load_student  # training core owns the format
        model, _ = load_student(self.stem)
        return model.eval()

    def weights_hash(self) -> str:
        """sha256 of the weights (16 hex chars): the cache key for derived graphs and engines."""
        if self._hash is None:
            h = hashlib.sha256()
            weights = self.stem.parent / (self.stem.name + ".safetensors") if self.stem else None
            if weights is not None and weights.is_file():
                with open(weights, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
            else:
                for k, v in self.load_torch().state_dict().items():
                    h.update(k.encode())
                    h.update(v.detach().cpu().contiguous().numpy().tobytes())
            h.update(json.dumps({k: self.meta[k] for k in REQUIRED_META}, sort_keys=True).encode())
            self._hash = h.hexdigest()[:16]
        return self._hash

    # -- ONNX ------------------------------------------------------------------------------
    def onnx_path(self) -> Path:
        """The fp32 ONNX graph: the exported sibling, else one exported into the cache."""
        if self.onnx is not None and self.onnx.is_file():
            return self.onnx
        out = cache_dir() / "onnx" / f"{self.name}-{self.weights_hash()}.onnx"
        if not out.is_file():
            export_onnx(self.load_torch(), tuple(self.meta["input_size"]), out)
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
                          f"ignored (re-run python -m stream.engines.int8 to make a new one)", stacklevel=2)
            return None
        return self.int8_onnx

    def default_int8_path(self) -> Path:
        """Where a calibrated int8 graph of this student belongs: next to it (where ``auto`` finds
        it), else, or when calibrated at another input size than exported, in the cache."""
        if self.stem is not None and not self.resized and os.access(self.stem.parent, os.W_OK):
            return self.stem.parent / (self.stem.name + ".int8.onnx")
        return cache_dir() / "onnx" / f"{self.name}-{self.weights_hash()}.int8.onnx"


def _check_meta(meta: dict, where: Any) -> dict:
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"student metadata {where} lacks {missing}; re-export the student")
    if len(meta["class_names"]) != int(meta["num_classes"]):
        raise ValueError(f"student metadata {where}: {len(meta['class_names'])} class names for "
                         f"num_classes={meta['num_classes']}")
    return meta


def export_onnx(model, input_size: tuple[int, int], out: Path, opset: int = 17) -> Path:
    """Export with input ``input`` (dynamic batch) and output ``logits`` (the contract's names).

    Square inputs go through the training core's exporter so both packages write the same graph;
    the fallback (TorchScript exporter) covers non-square inputs and in-memory modules."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if input_size[0] == input_size[1]:
        from pagkd_core.export import export_onnx as core_export
        tmp = out.with_name(out.name + f".{os.getpid()}.tmp.onnx")
        try:
            core_export(model, tmp, int(input_size[0]))
            os.replace(tmp, out)  # atomic: a concurrent reader never sees half a file
            return out
        except ImportError:  # the dynamo exporter needs onnxscript, absent on some GPU hosts
            pass
    import warnings

    import torch
    x = torch.zeros(1, 3, *input_size)
    tmp = out.with_name(out.name + f".{os.getpid()}.tmp.onnx")
    with warnings.catch_warnings():
        # the TorchScript exporter is deprecated but ~30x faster than dynamo and exact for CNNs
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (x,), str(tmp), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=opset, dynamo=False)
    os.replace(tmp, out)  # atomic: a concurrent reader never sees half a file
    return out
