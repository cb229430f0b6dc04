"""Dataset layouts -> a flat list of `Sample`s with class labels, lesion and patient ids.

generic : <root>/<WLI|NBI>/<class>/<lesion>_<n>.<ext>, or <root>/manifest.csv (synthetic data)
piccolo : images under <root> in WLI/NBI folders, file name <lesion>_..., plus a ';'-separated
          metadata CSV giving each lesion's histology (lesion id without leading zeros)
cpc     : <root>/White_light/<class>/<lesion>-<frame>.<ext>, NBI twin at the same path under NBI/
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

from pagkd_core.filetypes import IMAGE_EXTENSIONS
from pagkd_core.outputs import NO_LESION  # frames without a lesion: always label 0 when present

log = logging.getLogger("pagkd_core.data")
CANONICAL_CLASSES = ("hyperplastic", "adenoma", "adenocarcinoma")

MODALITIES = ("WLI", "NBI")
_MODALITY_DIRS = {"wli": "WLI", "wl": "WLI", "white_light": "WLI", "white light": "WLI", "nbi": "NBI"}


class DataError(ValueError):
    pass


@dataclass(frozen=True)
class Sample:
    path: str  # absolute path
    cls: str  # class name (label assigned once the class list is known)
    modality: str  # WLI | NBI
    lesion: str
    patient: str  # = lesion when the patient is unknown
    twin: str = ""  # same non-empty key in both modalities = a true (WLI, NBI) pair
    coverage: float | None = None  # the lesion's share of the field, where a manifest gives it
    contrast: float | None = None  # how much it changes the picture (grey levels), where a manifest gives it


def canonical_class(name: str) -> str:
    """Histology / folder names -> the canonical class names (others pass through, lower-case)."""
    n = name.strip().lower().replace(" ", "_").replace("-", "_")
    if n in (NO_LESION, "nolesion"):
        return NO_LESION
    if n.startswith(("hyperplas", "nice1", "nice_1")):
        return "hyperplastic"
    if n.startswith(("adenocarc", "nice3", "nice_3", "carcinoma")):
        return "adenocarcinoma"
    if n.startswith(("adenoma", "nice2", "nice_2")):
        return "adenoma"
    return n


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _modality_of(parts) -> str | None:
    for part in parts:
        if part.lower() in _MODALITY_DIRS:
            return _MODALITY_DIRS[part.lower()]
    return None


def scan_generic(root: Path) -> list[Sample]:
    manifest = root / "manifest.csv"
    if manifest.is_file():
        return read_manifest(manifest)
    samples = []
    for mdir in sorted(p for p in root.iterdir() if p.is_dir()):
        modality = _MODALITY_DIRS.get(mdir.name.lower())
        if modality is None:
            continue
        for cdir in sorted(p for p in mdir.iterdir() if p.is_dir()):
            files = _images(cdir)
            if not files:
                log.warning("ignored empty class folder %s", cdir)
            for f in files:
                lesion = f.stem.rsplit("_", 1)[0]
                samples.append(Sample(str(f.resolve()), canonical_class(cdir.name), modality, lesion, lesion))
    return samples


def read_manifest(manifest: Path) -> list[Sample]:
    root = manifest.parent
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    need = ("path", "lesion_id", "class", "modality")
    header = list(rows[0].keys()) if rows else []
    missing = [c for c in need if c not in header]
    if missing:
        raise DataError(
            f"{manifest}: missing column(s) {', '.join(missing)} (found: {', '.join(header) or 'none'}); "
            f"expected path,lesion_id,class,modality[,view,paired,patient_id]"
        )
    samples = []
    for i, r in enumerate(rows, start=2):
        modality = _MODALITY_DIRS.get(r["modality"].strip().lower())
        if modality is None:
            raise DataError(f"{manifest}, line {i}: modality {r['modality']!r} is not WLI or NBI")
        lesion = r["lesion_id"].strip()
        patient = (r.get("patient_id") or "").strip() or lesion
        # The manifest's view index is not a shared camera pose across modalities: pair by lesion.
        path = str((root / r["path"]).resolve())
        # synth frames/video-frames record both
        coverage = float(r["coverage"]) if r.get("coverage") else None
        contrast = float(r["lesion_contrast"]) if r.get("lesion_contrast") else None
        samples.append(Sample(path, canonical_class(r["class"]), modality, lesion, patient, coverage=coverage,
                              contrast=contrast))
    return samples


def _find_column(
    header: list[str],
    wanted: str,
    hints: tuple[str, ...],
    csv_path: Path,
    cfg_key: str,
    required: bool = True,
) -> str | None:
    if wanted:
        if wanted not in header:
            raise DataError(f"{csv_path}: no column '{wanted}' (found: {', '.join(header)})")
        return wanted
    for h in header:
        if any(hint in h.lower() for hint in hints):
            return h
    if required:
        raise DataError(
            f"{csv_path}: cannot find a {hints[0]} column (found: {', '.join(header)}); "
            f"is it ';'-separated? Name the column with data.{cfg_key}"
        )
    return None


def _lesion_key(s: str) -> str:
    s = s.strip()
    return s.lstrip("0") or "0" if s.isdigit() else s


def scan_piccolo(
    root: Path, csv_path: str = "", lesion_col: str = "", class_col: str = "", patient_col: str = ""
) -> list[Sample]:
    if csv_path:
        meta = Path(csv_path)
    else:
        found = sorted(root.glob("*.csv"))
        if len(found) != 1:
            raise DataError(f"{root}: expected one metadata CSV, found {len(found)}; set data.csv")
        meta = found[0]
    if not meta.is_file():
        raise DataError(f"metadata CSV not found: {meta}")
    with open(meta, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh, delimiter=";"))
    header = [h for h in (rows[0].keys() if rows else []) if h is not None]
    if len(header) < 2:
        raise DataError(
            f"{meta}: found {len(header)} column(s) ({', '.join(header) or 'empty file'}); the metadata "
            f"CSV must be ';'-separated with lesion id and histology columns"
        )
    lcol = _find_column(header, lesion_col, ("lesion", "id"), meta, "csv_lesion_col")
    ccol = _find_column(header, class_col, ("histolog", "diagnos", "class"), meta, "csv_class_col")
    pcol = _find_column(header, patient_col, ("patient",), meta, "csv_patient_col", required=False)
    lesions: dict[str, tuple[str, str]] = {}
    for i, r in enumerate(rows, start=2):
        key = _lesion_key(r.get(lcol) or "")
        if not key:
            raise DataError(f"{meta}, line {i}: empty lesion id in column '{lcol}'")
        cls = canonical_class(r.get(ccol) or "")
        lesions[key] = (cls, _lesion_key(r.get(pcol) or "") if pcol else "")
    samples, unknown, no_modality = [], 0, []
    for f in _images(root):
        key = _lesion_key(f.stem.split("_", 1)[0])
        if key not in lesions:
            unknown += 1
            continue
        modality = _modality_of(f.relative_to(root).parts[:-1])
        if modality is None:
            no_modality.append(f)
            continue
        cls, patient = lesions[key]
        samples.append(Sample(str(f.resolve()), cls, modality, key, patient or key))
    if no_modality:
        raise DataError(
            f"{no_modality[0]}: cannot tell WLI from NBI; put images in folders named WLI/ and NBI/ "
            f"({len(no_modality)} such files)"
        )
    if unknown:
        log.warning("skipped %d image(s) whose lesion id is not in %s", unknown, meta)
    return samples


def scan_cpc(root: Path) -> list[Sample]:
    wl = next((p for p in root.iterdir() if p.is_dir() and p.name.lower() == "white_light"), None)
    nbi = next((p for p in root.iterdir() if p.is_dir() and p.name.lower() == "nbi"), None)
    if wl is None or nbi is None:
        raise DataError(f"{root}: the CPC-Paired layout needs White_light/ and NBI/ folders")
    samples = []
    for mdir, modality in ((wl, "WLI"), (nbi, "NBI")):
        for f in _images(mdir):
            rel = f.relative_to(mdir)
            if len(rel.parts) < 2:
                raise DataError(f"{f}: expected <modality>/<class>/<lesion>-<frame>.<ext>")
            lesion = f.stem.rsplit("-", 1)[0]
            samples.append(
                Sample(
                    str(f.resolve()),
                    canonical_class(rel.parts[0]),
                    modality,
                    lesion,
                    lesion,
                    twin=rel.with_suffix("").as_posix(),
                )
            )
    return samples


def detect_layout(root: Path) -> str:
    names = {p.name.lower() for p in root.iterdir()}
    if "manifest.csv" in names:
        return "generic"
    if "white_light" in names:
        return "cpc"
    if any(n.endswith(".csv") for n in names):  # a metadata CSV next to WLI/NBI folders
        return "piccolo"
    if {"wli", "nbi"} <= names:
        return "generic"
    raise DataError(
        f"{root}: cannot tell the dataset layout (no manifest.csv, WLI/NBI, White_light/ or "
        f"metadata CSV); set data.layout"
    )


def scan(cfg) -> tuple[str, list[Sample]]:
    """`cfg`: a DataConfig. Returns (layout, samples) before class filtering."""
    root = Path(cfg.root)
    if not root.is_dir():
        raise DataError(
            f"data root not found: {root} (make synthetic data with "
            f"`python -m pagkd_core synth-images --out {root}`)"
        )
    layout = detect_layout(root) if cfg.layout == "auto" else cfg.layout
    if layout == "generic":
        samples = scan_generic(root)
    elif layout == "cpc":
        samples = scan_cpc(root)
    else:
        samples = scan_piccolo(root, cfg.csv, cfg.csv_lesion_col, cfg.csv_class_col, cfg.csv_patient_col)
    return layout, samples


def class_list(samples: list[Sample], requested: list[str], root) -> list[str]:
    """The class order (label = index). Requested classes must exist in both modalities; otherwise
    canonical names come first, then others alphabetically. `no_lesion`, when used, is always
    first (label 0). A class in one modality only is an error."""
    per_mod = {m: {s.cls for s in samples if s.modality == m} for m in MODALITIES}
    present = per_mod["WLI"] | per_mod["NBI"]
    wanted = (
        [canonical_class(c) for c in requested]
        if requested
        else ([c for c in CANONICAL_CLASSES if c in present] + sorted(present - set(CANONICAL_CLASSES)))
    )
    wanted = sorted(wanted, key=lambda c: c != NO_LESION)  # stable: only moves no_lesion to the front
    for c in wanted:
        missing = [m for m in MODALITIES if c not in per_mod[m]]
        if len(missing) == 2:
            raise DataError(f"{root}: class '{c}' has no images (check data.classes and the class folders)")
        if missing:
            raise DataError(
                f"{root}: class '{c}' has {MODALITIES[MODALITIES.index(missing[0]) - 1]} images "
                f"but no {missing[0]} images; add them or drop the class via data.classes"
            )
    if len(wanted) < 2:
        raise DataError(f"{root}: need at least 2 classes with images, found {wanted or 'none'}")
    return wanted
