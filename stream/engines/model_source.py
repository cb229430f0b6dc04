"""Where an engine's model comes from: an exported student on disk, or a module in memory.

The exported student's format (its files, metadata and ONNX export) belongs to the training
core's ``pagkd_core.student``, the only module of the training core the runtime imports. Engines
that need an ONNX graph and find none beside the student export one into the cache, keyed by the
weights' hash.

The calibrated int8 graphs beside a student are named here (``int8_suffix``): the portable one,
``<stem>.int8.onnx``, and variants made for an instruction set, ``<stem>.int8.<tag>.onnx``, each
with its report (``<stem>.int8[.<tag>].json``, written by ``python -m benchmarks.int8``).
``ModelSource.int8_graph`` picks the one made for this host.
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pagkd_core.digest import update_from_file
from pagkd_core.student import cache_meta, check_run_meta, export_onnx, load_student, read_meta, sibling
from stream import host

_TAG = re.compile(r"[a-z0-9_]+")


def int8_suffix(variant: str | None = None) -> str:
    """The suffix of a student's int8 graph: ``.int8.onnx`` for the portable one, ``.int8.<variant>.onnx``
    for one made for an instruction set (``variant``: lower-case letters, digits, ``_``; e.g. vnni)."""
    if variant is None:
        return ".int8.onnx"
    if not _TAG.fullmatch(variant):
        raise ValueError(f"int8 variant tag must be lower-case letters, digits or _ (e.g. vnni), "
                         f"got {variant!r}")
    return f".int8.{variant}.onnx"


def int8_report(graph: Path) -> Path:
    """The report beside an int8 graph: how, from which weights and for which hosts it was made."""
    return graph.with_suffix(".json")


def int8_variants(stem: Path) -> tuple[Path, ...]:
    """The ``<stem>.int8.<tag>.onnx`` files beside a student, by name."""
    prefix = stem.name + ".int8."
    found = stem.parent.glob(glob.escape(prefix) + "*.onnx")  # escaped: a stem may hold [ or *
    return tuple(sorted(p for p in found if _TAG.fullmatch(p.name[len(prefix):-len(".onnx")])))


@dataclass(frozen=True)
class Int8Graph:
    """A calibrated int8 graph and the instruction-set flags its report says it was made for
    (empty: for any host, or a report from before ``for_isa`` was recorded)."""

    path: Path
    for_isa: tuple[str, ...] = ()
    portable: bool = True  # the student's <stem>.int8.onnx (or a graph a caller gave), not a variant

    def fits(self, flags: Iterable[str]) -> bool:
        return set(self.for_isa) <= set(flags)

    def label(self) -> str:
        return f"{self.path.name}, for {' '.join(self.for_isa) or 'any host'}"


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
    int8_onnx: Path | None = None           # the portable int8 graph (or one a caller gives)
    int8_variants: tuple[Path, ...] = ()     # int8 graphs made for an instruction set (int8_graph)
    resized: bool = False                    # run at another size than exported (at_input_size)
    _hash: str | None = field(default=None, repr=False)

    @classmethod
    def from_path(cls, path: str | os.PathLike) -> ModelSource:
        stem, meta = read_meta(path)
        onnx, int8 = sibling(stem, ".onnx"), sibling(stem, int8_suffix())
        return cls(meta=meta, name=stem.name, stem=stem, onnx=onnx if onnx.is_file() else None,
                   int8_onnx=int8 if int8.is_file() else None, int8_variants=int8_variants(stem))

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
                                   int8_variants=(), resized=True, _hash=None)

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
                update_from_file(h, weights)
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

    def int8_graph(self, flags: Iterable[str] | None = None) -> Int8Graph | None:
        """The int8 graph to run on a host with instruction-set ``flags`` (default: this one's).
        Of the graphs whose report's ``for_isa`` flags the host all has, the one with the most
        (the most specific); on a tie the portable one. Where none fits, the portable one, as
        before variants existed: it is the graph meant to run anywhere, and ``auto`` checks its
        agreement on this host. A graph whose report names other weights is never used."""
        flags = host.isa_flags() if flags is None else list(flags)
        graphs = self.int8_graphs()
        fitting = [g for g in graphs if g.fits(flags)]
        if not fitting:
            return next((g for g in graphs if g.portable), None)
        return max(fitting, key=lambda g: (len(g.for_isa), g.portable))  # max keeps the first of equals

    def int8_graphs(self) -> list[Int8Graph]:
        """The int8 graphs this student may run, the portable one first, variants by name."""
        graphs = [self._int8(self.int8_onnx, portable=True)]
        graphs += [self._int8(p, portable=False) for p in self.int8_variants]
        return [g for g in graphs if g is not None]

    def int8_onnx_path(self) -> Path | None:
        """The path of ``int8_graph()``: what every int8 engine of this student runs."""
        graph = self.int8_graph()
        return graph.path if graph else None

    def use_int8(self, path: str | os.PathLike) -> None:
        """Run this int8 graph and no other (one just calibrated, a benchmark's own): the
        variants beside the student no longer compete with it."""
        self.int8_onnx, self.int8_variants = Path(path), ()

    def _int8(self, path: Path | None, portable: bool) -> Int8Graph | None:
        """``path`` with what its report says, or None: absent, made from other weights (a student
        re-exported over the old one) or, for a variant, without the report that says which hosts
        it is for."""
        if path is None or not path.is_file():
            return None
        report_path = int8_report(path)
        report = json.loads(report_path.read_text()) if report_path.is_file() else None
        if report is None and not portable:
            warnings.warn(f"{path} has no report ({report_path.name}) saying which hosts it is for; ignored "
                          f"(re-run python -m benchmarks.int8 --variant to make it again)", stacklevel=3)
            return None
        made_from = (report or {}).get("weights_hash")
        if made_from is not None and made_from != self.weights_hash():
            warnings.warn(f"{path} was calibrated for other weights than {self.name}'s; "
                          f"ignored (re-run python -m benchmarks.int8 to make a new one)", stacklevel=3)
            return None
        return Int8Graph(path, tuple((report or {}).get("for_isa") or ()), portable)

    def default_int8_path(self, variant: str | None = None) -> Path:
        """Where a calibrated int8 graph of this student (the portable one, or ``variant``) belongs:
        next to it (where ``auto`` finds it), else, or when calibrated at another input size than
        exported, in the cache."""
        suffix = int8_suffix(variant)
        if self.stem is not None and not self.resized and os.access(self.stem.parent, os.W_OK):
            return sibling(self.stem, suffix)
        return cache_dir() / "onnx" / f"{self.name}-{self.weights_hash()}{suffix}"

