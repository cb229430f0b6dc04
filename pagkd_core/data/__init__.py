"""Data: layouts -> checked samples -> lesion-level folds -> datasets and the coupling sampler."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from pagkd_core.data.images import ImageError, ImageStore, read_image
from pagkd_core.data.layouts import DataError, Sample, class_list, scan
from pagkd_core.data.sampler import CoupleBatchSampler
from pagkd_core.data.splits import load_or_make_folds, select, subsample_lesions
from pagkd_core.data.transforms import augment, jpeg_roundtrip, normalize
from pagkd_core.outputs import NO_LESION

# What a lesion image trains (pagkd_core.class_loss): NEAR its label; FAR only its split among the
# lesion classes; FAR_SEEN that split and "a lesion is in view" (P(no_lesion) towards 0).
NEAR, FAR, FAR_SEEN = 0, 1, 2


class ImageSet(Dataset):
    """Samples -> (normalised image, label). `far`: per sample, whether its lesion covers less of
    the field than `far_coverage` (its class is then not a training target: pagkd_core.class_loss);
    `far_seen`: a far lesion covering at least `presence_coverage`, big enough to be told from
    no lesion, and changing the picture by at least `presence_contrast` grey levels (0: no such
    gate; an image whose contrast is unknown never passes one), so it still trains presence. An
    image with no lesion is never far: its coverage of 0 is the truth "nothing in view", and its
    no_lesion label is what teaches presence."""

    def __init__(
        self, samples: list[Sample], class_names: list[str], store: ImageStore, train: bool,
        far_coverage: float = 0.0, presence_coverage: float = 1.0, jpeg_quality: int = 0,
        presence_contrast: float = 0.0,
    ):  # fmt: skip
        self.samples, self.store, self.train = samples, store, train
        self.jpeg_quality = jpeg_quality  # > 0: a JPEG round trip at quality in [it, JPEG_BEST] (train only)
        self.labels = [class_names.index(s.cls) for s in samples]
        self.far = [s.cls != NO_LESION and s.coverage is not None and s.coverage < far_coverage for s in samples]
        shows = [presence_contrast <= 0 or (s.contrast is not None and s.contrast >= presence_contrast) for s in samples]
        self.far_seen = [f and s.coverage >= presence_coverage and c for f, s, c in zip(self.far, samples, shows)]

    def target_kind(self, i: int) -> int:
        """NEAR, FAR or FAR_SEEN: what image i trains."""
        return FAR_SEEN if self.far_seen[i] else FAR if self.far[i] else NEAR

    def __len__(self) -> int:
        return len(self.samples)

    def image(self, i: int) -> torch.Tensor:
        img = self.store.load(self.samples[i].path)
        if not self.train:
            return normalize(img)
        if self.jpeg_quality:  # the codec acts on the frame, before our own geometry
            img = jpeg_roundtrip(img, self.jpeg_quality)
        return normalize(augment(img))

    def __getitem__(self, i: int):
        return self.image(i), self.labels[i]


class CoupleSet(Dataset):
    """Index (i, j) -> (primary image i, partner image j or an empty tensor when j = -1, label,
    what image i trains: NEAR, FAR or FAR_SEEN)."""

    def __init__(self, primary: ImageSet, partner: ImageSet | None):
        self.primary, self.partner = primary, partner

    def __getitem__(self, ij):
        i, j = ij
        other = self.partner.image(j) if j >= 0 else torch.empty(0)
        return self.primary.image(i), other, self.primary.labels[i], self.primary.target_kind(i)


@dataclass
class FoldData:
    class_names: list[str]
    layout: str
    splits: dict
    fold: int
    store: ImageStore
    samples: list[Sample]
    wli_train_lesions: int = 0  # few-labels regime: WLI training lesions kept per class (0 = all)
    split_seed: int = 0

    def for_config(self, cfg) -> FoldData:
        """The same prepared data (cached images) seen as `cfg` asks: its fold and WLI subsample."""
        d = cfg.data
        return dataclasses.replace(self, fold=d.fold, wli_train_lesions=d.wli_train_lesions, split_seed=d.split_seed)

    def part(self, split: str, modality: str) -> list[Sample]:
        samples = select(self.samples, self.splits["folds"][self.fold][split], modality)
        if split == "train" and modality == "WLI" and self.wli_train_lesions > 0:
            # Seeded by (split seed, fold) only, so every training seed and every method of a
            # benchmark sees the same few labelled lesions (a paired comparison).
            samples = subsample_lesions(samples, self.wli_train_lesions, seed=self.split_seed * 1000 + self.fold)
        return samples

    def images(self, split: str, modality: str, train: bool = False, far_coverage: float = 0.0,
               presence_coverage: float = 1.0, jpeg_quality: int = 0, presence_contrast: float = 0.0) -> ImageSet:  # fmt: skip
        return ImageSet(self.part(split, modality), self.class_names, self.store, train, far_coverage,
                        presence_coverage, jpeg_quality, presence_contrast)


def prepare(cfg, out_dir: str | Path, progress: bool = True) -> FoldData:
    """`cfg`: the full Config. Scans, checks every image once, and loads/writes <out_dir>/splits.json."""
    layout, samples = scan(cfg.data)
    classes = class_list(samples, cfg.data.classes, cfg.data.root)
    samples = [s for s in samples if s.cls in classes]
    store = ImageStore(cfg.data.image_size, cfg.data.cache)
    samples = store.check(samples, progress)
    classes = class_list(samples, classes, cfg.data.root)  # re-check: skipping may empty a class
    splits = load_or_make_folds(
        Path(out_dir) / "splits.json", samples, cfg.data.folds, cfg.data.val_fraction, cfg.data.split_seed
    )
    return FoldData(classes, layout, splits, cfg.data.fold, store, samples).for_config(cfg)


def true_partners(primary: ImageSet, partner: ImageSet) -> list[list[int]]:
    """For each primary image, the partner images of the same view (twin) or else the same lesion."""
    by_twin, by_lesion = {}, {}
    for j, s in enumerate(partner.samples):
        if s.twin:
            by_twin.setdefault(s.twin, []).append(j)
        by_lesion.setdefault(s.lesion, []).append(j)
    return [by_twin.get(s.twin) or by_lesion.get(s.lesion, []) for s in primary.samples]


def couple_loader(
    primary: ImageSet,
    partner: ImageSet | None,
    num_classes: int,
    batch_size: int,
    *,
    pairing: str = "random",
    steps: int = 0,
    seed: int = 0,
    by_lesion: bool = False,
    workers: int = 0,
    rank: int = 0,
    world: int = 1,
) -> DataLoader:
    partners = true_partners(primary, partner) if partner is not None and pairing == "true" else None
    sampler = CoupleBatchSampler(
        primary.labels,
        num_classes,
        batch_size,
        partner_labels=None if partner is None else partner.labels,
        partners=partners,
        groups=[smp.lesion for smp in primary.samples] if by_lesion else None,
        steps=steps,
        seed=seed,
        rank=rank,
        world=world,
    )
    return DataLoader(
        CoupleSet(primary, partner), batch_sampler=sampler, num_workers=workers, persistent_workers=False
    )


__all__ = [
    "CoupleBatchSampler",
    "CoupleSet",
    "DataError",
    "FoldData",
    "ImageError",
    "ImageSet",
    "ImageStore",
    "Sample",
    "couple_loader",
    "prepare",
    "read_image",
]
