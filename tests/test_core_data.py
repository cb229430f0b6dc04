"""Data: layouts, bad input, lesion-level splits, the coupling sampler."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_core_fixtures import CLASSES, lesion_image, make_generic

from pagkd_core.config import load_config
from pagkd_core.data import DataError, ImageError, couple_loader, prepare, read_image
from pagkd_core.data.layouts import scan
from pagkd_core.data.sampler import CoupleBatchSampler
from pagkd_core.data.splits import make_folds
from pagkd_core.data.transforms import jpeg_roundtrip


def cfg_for(root, out, *extra):
    return load_config(
        None,
        [
            f"data.root={root}",
            f"run.out_dir={out}",
            "data.image_size=32",
            "data.folds=3",
            "run.progress=false",
            *extra,
        ],
    )


def test_generic_with_and_without_manifest(tmp_path):
    root = make_generic(tmp_path / "d", manifest=True)
    _, with_manifest = scan(cfg_for(root, tmp_path).data)
    (root / "manifest.csv").unlink()
    _, without = scan(cfg_for(root, tmp_path).data)
    key = lambda s: (s.path, s.cls, s.modality, s.lesion)
    assert sorted(map(key, with_manifest)) == sorted(map(key, without))
    assert {s.modality for s in without} == {"WLI", "NBI"}
    data = prepare(cfg_for(root, tmp_path / "run"), tmp_path / "run", progress=False)
    assert data.class_names == list(CLASSES)  # canonical order, not alphabetical


def test_splits_are_disjoint_by_lesion_and_patient(tmp_path):
    root = make_generic(tmp_path / "d", lesions_per_class=9)
    data = prepare(cfg_for(root, tmp_path / "run"), tmp_path / "run", progress=False)
    lesion_patient = {s.lesion: s.patient for s in data.samples}
    tests = []
    for fold in data.splits["folds"]:
        parts = [set(fold[p]) for p in ("train", "val", "test")]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert set().union(*parts) == set(lesion_patient.values())
        assert parts[1], "validation is carved from the training folds"
        tests.append(parts[2])
    assert set().union(*tests) == set(lesion_patient.values()) and sum(map(len, tests)) == len(lesion_patient)
    # images of one lesion never straddle train and test, in either modality
    for f in range(3):
        d = type(data)(**{**data.__dict__, "fold": f})
        train = {s.lesion for m in ("WLI", "NBI") for s in d.part("train", m)}
        test = {s.lesion for m in ("WLI", "NBI") for s in d.part("test", m)}
        assert not train & test
    # the split file is written and reused
    assert (tmp_path / "run" / "splits.json").is_file()
    again = prepare(cfg_for(root, tmp_path / "run"), tmp_path / "run", progress=False)
    assert again.splits == data.splits


def test_patient_grouping_keeps_patients_together():
    from pagkd_core.data.layouts import Sample

    samples = [Sample(f"/x/{i}.png", CLASSES[i % 2], "WLI", f"L{i}", f"P{i // 3}") for i in range(30)]
    splits = make_folds(samples, 5, 0.2, seed=1)
    for fold in splits["folds"]:
        assert not set(fold["test"]) & (set(fold["train"]) | set(fold["val"]))
        assert all(p.startswith("P") for p in fold["test"])


@pytest.mark.parametrize("world", [1, 2])
def test_sampler_every_class_every_batch_and_redrawn(world):
    labels = np.array([0] * 20 + [1] * 3 + [2] * 7)  # imbalanced, small class 1
    partner = np.array([0] * 4 + [1] * 9 + [2] * 2)
    batches = {}
    for rank in range(world):
        s = CoupleBatchSampler(labels, 3, 7, partner_labels=partner, steps=10, seed=3, rank=rank, world=world)
        s.set_epoch(0)
        batches[rank] = list(s)
        assert len(batches[rank]) == len(s) == -(-10 // world)
    for bs in batches.values():
        for b in bs:
            assert len(b) == 7
            counts = Counter(labels[i] for i, _ in b)
            assert set(counts) == {0, 1, 2} and max(counts.values()) - min(counts.values()) <= 1
            assert all(labels[i] == partner[j] for i, j in b), "couples must be same-class"
    if world == 2:
        assert batches[0] != batches[1]
    s = CoupleBatchSampler(labels, 3, 7, partner_labels=partner, steps=10, seed=3)
    s.set_epoch(0)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    s.set_epoch(0)
    assert list(s) == e0 and e0 != e1, "deterministic per epoch, re-drawn across epochs"


def test_sampler_by_lesion_weighs_lesions_not_images():
    # class 0: lesion "a" has 18 images, "b" and "c" one each; class 1: two lesions of 2 images
    labels = np.array([0] * 20 + [1] * 4)
    groups = ["a"] * 18 + ["b", "c"] + ["d", "d", "e", "e"]
    s = CoupleBatchSampler(labels, 2, 6, groups=groups, steps=300, seed=0)
    s.set_epoch(0)
    drawn = Counter(groups[i] for b in s for i, _ in b)
    by_image = CoupleBatchSampler(labels, 2, 6, steps=300, seed=0)
    by_image.set_epoch(0)
    drawn_by_image = Counter(groups[i] for b in by_image for i, _ in b)
    # 900 class-0 draws: a third each by lesion, 90% "a" by image
    assert all(abs(drawn[g] - 300) < 60 for g in "abc"), drawn
    assert drawn_by_image["a"] > 700 and drawn["d"] + drawn["e"] == 900
    assert len({i for b in s for i, _ in b if groups[i] == "a"}) == 18, "every image of a lesion is drawn"
    s.set_epoch(0)
    again = list(s)
    s.set_epoch(0)
    assert list(s) == again, "deterministic per epoch"
    with pytest.raises(ValueError, match="3 groups for 24 images"):
        CoupleBatchSampler(labels, 2, 6, groups=["a", "b", "c"])


def test_sampler_true_pairing_and_errors():
    labels = [0, 0, 1, 1]
    partners = [[5], [], [7, 8], [8]]
    s = CoupleBatchSampler(labels, 2, 4, partner_labels=[0] * 6 + [1] * 3, partners=partners, steps=3)
    for b in s:
        for i, j in b:
            assert j in partners[i]
    with pytest.raises(ValueError, match="cannot hold all 3 classes"):
        CoupleBatchSampler([0, 1, 2], 3, 2)
    with pytest.raises(ValueError, match="class 1 has no paired images"):
        CoupleBatchSampler([0, 1], 2, 2, partner_labels=[0, 1], partners=[[0], []])


def test_couple_loader_shapes(tmp_path):
    root = make_generic(tmp_path / "d")
    data = prepare(cfg_for(root, tmp_path / "run"), tmp_path / "run", progress=False)
    wli, nbi = data.images("train", "WLI", train=True), data.images("train", "NBI", train=True)
    x, p, y, far = next(iter(couple_loader(wli, nbi, 2, 4, steps=1)))
    assert x.shape == p.shape == (4, 3, 32, 32) and sorted(y.tolist()) == [0, 0, 1, 1]
    assert far.dtype == torch.int64 and not far.any()  # no coverage in this layout: nothing is far (all NEAR)
    assert abs(float(x.mean())) < 3  # normalised, not 0..255
    x, p, y, _ = next(iter(couple_loader(wli, nbi, 2, 4, steps=1, pairing="true")))
    x, p, y, _ = next(iter(couple_loader(wli, None, 2, 4, steps=1)))
    assert p.numel() == 0


def test_jpeg_round_trip_is_seeded_and_only_on_training_images(tmp_path):
    """data.jpeg_quality: a training image goes through JPEG (a stand-in for the video codec) at a
    seeded quality draw; evaluation images never do."""
    img = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 48, 48), dtype=np.uint8))
    torch.manual_seed(1)
    a = jpeg_roundtrip(img, 40)
    torch.manual_seed(1)
    assert torch.equal(a, jpeg_roundtrip(img, 40))            # same seed, same draw, same bytes
    assert a.shape == img.shape and a.dtype == torch.uint8
    assert (a.float() - img.float()).abs().mean() > 5          # noise is what JPEG removes first
    assert (jpeg_roundtrip(img, 95, 95).float() - img.float()).abs().mean() < (a.float() - img.float()).abs().mean()
    root = make_generic(tmp_path / "d")
    data = prepare(cfg_for(root, tmp_path / "run"), tmp_path / "run", progress=False)
    plain, coded = data.images("test", "WLI"), data.images("test", "WLI", jpeg_quality=40)
    assert torch.equal(plain.image(0), coded.image(0))        # not training: untouched
    torch.manual_seed(2)
    x = data.images("train", "WLI", train=True).image(0)
    torch.manual_seed(2)
    y = data.images("train", "WLI", train=True, jpeg_quality=40).image(0)
    assert x.shape == y.shape and not torch.equal(x, y)


# ---- bad input -------------------------------------------------------------------------------


def test_mixed_modes_and_sizes_are_converted(tmp_path):
    rng = np.random.default_rng(0)
    rgb = lesion_image(0, "WLI", rng, size=37)
    cases = {
        "gray.png": Image.fromarray(rgb[..., 0]),
        "rgba.png": Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])),
        "pal.png": Image.fromarray(rgb).convert("P"),
        "g16.png": Image.fromarray(rgb[..., 0].astype(np.uint16) * 257),
        "big.jpg": Image.fromarray(rgb).resize((90, 61)),
    }
    for name, img in cases.items():
        img.save(tmp_path / name)
        t = read_image(str(tmp_path / name))
        assert t.dtype == torch.uint8 and t.shape[0] == 3, name
    g16 = read_image(str(tmp_path / "g16.png"))
    assert abs(int(g16[0].max()) - int(rgb[..., 0].max())) <= 1, "16-bit is rescaled, not clipped"


def test_corrupt_images_are_skipped_with_count(tmp_path, caplog):
    root = make_generic(tmp_path / "d", manifest=False)
    bad = root / "WLI" / "adenoma" / "ade000_9.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ImageError, match="ade000_9.png"):
        read_image(str(bad))
    truncated = root / "NBI" / "adenoma" / "ade000_8.png"
    truncated.write_bytes((root / "NBI" / "adenoma" / "ade000_0.png").read_bytes()[:60])
    with caplog.at_level("WARNING"):
        data = prepare(cfg_for(root, tmp_path / "run"), tmp_path / "run", progress=False)
    assert "skipped 2 unreadable image(s)" in caplog.text
    assert all(s.path not in (str(bad), str(truncated)) for s in data.samples)


def test_empty_class_folder_is_ignored_and_one_modality_class_is_an_error(tmp_path, caplog):
    root = make_generic(tmp_path / "d", manifest=False)
    (root / "WLI" / "adenocarcinoma").mkdir()
    (root / "NBI" / "adenocarcinoma").mkdir()
    with caplog.at_level("WARNING"):
        data = prepare(cfg_for(root, tmp_path / "run"), tmp_path / "run", progress=False)
    assert data.class_names == list(CLASSES) and "empty class folder" in caplog.text
    shutil.copy(root / "WLI" / "adenoma" / "ade000_0.png", root / "WLI" / "adenocarcinoma" / "car000_0.png")
    with pytest.raises(DataError, match="class 'adenocarcinoma' has WLI images but no NBI images"):
        prepare(cfg_for(root, tmp_path / "run2"), tmp_path / "run2", progress=False)
    with pytest.raises(DataError, match="class 'polyp' has no images"):
        prepare(cfg_for(root, tmp_path / "run3", "data.classes=[adenoma,polyp]"), tmp_path / "run3")


def test_wrong_manifest_and_piccolo_csv(tmp_path):
    root = make_generic(tmp_path / "d")
    (root / "manifest.csv").write_text("file,label\na.png,adenoma\n")
    with pytest.raises(DataError, match=r"manifest.csv: missing column\(s\) path, lesion_id"):
        scan(cfg_for(root, tmp_path).data)
    pic = tmp_path / "pic"
    for m in ("WLI", "NBI"):
        (pic / m).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for lesion, cls in ((1, 0), (2, 1), (3, 0), (4, 1)):
        for m in ("WLI", "NBI"):
            Image.fromarray(lesion_image(cls, m, rng)).save(pic / m / f"{lesion:03d}_VP1_frame{lesion}.png")
    (pic / "meta.csv").write_text(
        "Lesion ID;Patient;Histology\n1;a;Hyperplasia\n2;a;Adenoma\n3;b;hyperplastic\n4;c;ADENOMA\n"
    )
    layout, samples = scan(cfg_for(pic, tmp_path).data)
    assert layout == "piccolo" and len(samples) == 8
    assert {(s.lesion, s.cls, s.patient) for s in samples} >= {
        ("1", "hyperplastic", "a"),
        ("2", "adenoma", "a"),
    }
    (pic / "meta.csv").write_text("Lesion ID,Histology\n1,Adenoma\n")  # comma-separated: wrong format
    with pytest.raises(DataError, match="meta.csv: found 1 column.*';'-separated"):
        scan(cfg_for(pic, tmp_path).data)


def test_cpc_paired_layout_pairs_twins(tmp_path):
    root = tmp_path / "cpc"
    rng = np.random.default_rng(0)
    for cls_dir, c in (("adenoma", 1), ("hyperplasia", 0)):
        for mod, m in (("White_light", "WLI"), ("NBI", "NBI")):
            (root / mod / cls_dir).mkdir(parents=True)
            for lesion in range(4):
                for frame in range(2):
                    Image.fromarray(lesion_image(c, m, rng)).save(
                        root / mod / cls_dir / f"{lesion}-{frame}.png"
                    )
    cfg = cfg_for(root, tmp_path / "run", "data.folds=2")
    data = prepare(cfg, tmp_path / "run", progress=False)
    assert data.layout == "cpc" and data.class_names == ["hyperplastic", "adenoma"]
    from pagkd_core.data import true_partners

    wli, nbi = data.images("train", "WLI"), data.images("train", "NBI")
    for i, js in enumerate(true_partners(wli, nbi)):
        assert len(js) == 1
        assert Path(nbi.samples[js[0]].path).relative_to(root / "NBI") == Path(
            wli.samples[i].path
        ).relative_to(root / "White_light")


def add_no_lesion_class(root: Path, lesions: int = 4, views: int = 2) -> Path:
    """Add 'no_lesion' frames (both modalities) to a make_generic dataset's manifest."""
    rng = np.random.default_rng(9)
    rows = []
    for i in range(lesions):
        for m in ("WLI", "NBI"):
            (root / m / "no_lesion").mkdir(parents=True, exist_ok=True)
            for v in range(views):
                rel = f"{m}/no_lesion/nol{i:03d}_{v}.png"
                Image.fromarray((lesion_image(0, m, rng) * 0.6).astype(np.uint8)).save(root / rel)
                rows.append(f"{rel},nol{i:03d},no_lesion,{m},{v},1")
    with open(root / "manifest.csv", "a") as fh:
        fh.write("\n".join(rows) + "\n")
    return root


def test_no_lesion_class_is_label_zero_and_trains_through_the_sampler(tmp_path):
    root = add_no_lesion_class(make_generic(tmp_path / "d"))
    data = prepare(cfg_for(root, tmp_path / "run"), tmp_path / "run", progress=False)
    assert data.class_names == ["no_lesion", *CLASSES]
    requested = prepare(cfg_for(root, tmp_path / "run2", "data.classes=[adenoma,no_lesion,hyperplastic]"),
                        tmp_path / "run2", progress=False)
    assert requested.class_names == ["no_lesion", "adenoma", "hyperplastic"]
    wli, nbi = data.images("train", "WLI"), data.images("train", "NBI")
    loader = couple_loader(wli, nbi, 3, 6, steps=2, seed=0)
    for x, partner, y, _ in loader:
        assert set(y.tolist()) == {0, 1, 2} and partner.shape == x.shape


def test_reused_splits_are_checked_against_the_split_settings(tmp_path):
    root = make_generic(tmp_path / "d", lesions_per_class=9)
    prepare(cfg_for(root, tmp_path / "run"), tmp_path / "run", progress=False)
    for change, what in (("data.val_fraction=0.3", "val_fraction"), ("data.split_seed=1", "seed"),
                         ("data.folds=4", "k")):
        with pytest.raises(DataError, match=f"other split settings.*{what}.*delete it"):
            prepare(cfg_for(root, tmp_path / "run", change), tmp_path / "run", progress=False)
    # the same settings on fewer patients/lesions is other data, not a subset to reuse silently
    from pagkd_core.data.splits import load_or_make_folds

    data = prepare(cfg_for(root, tmp_path / "fresh"), tmp_path / "fresh", progress=False)
    fewer = [s for s in data.samples if s.lesion != data.samples[0].lesion]
    with pytest.raises(DataError, match="other data.*1 missing"):
        load_or_make_folds(tmp_path / "run" / "splits.json", fewer, 3, 0.2, 0)


def test_few_labels_subsamples_wli_training_lesions_only(tmp_path):
    root = make_generic(tmp_path / "d", lesions_per_class=12, paired_every=1)
    cfg = cfg_for(root, tmp_path / "run", "data.wli_train_lesions=2")
    few = prepare(cfg, tmp_path / "run", progress=False)
    full = few.for_config(cfg_for(root, tmp_path / "run"))
    per_class = Counter(s.cls for s in {(s.lesion, s.cls): s for s in few.part("train", "WLI")}.values())
    assert per_class == {c: 2 for c in CLASSES}
    assert few.part("train", "NBI") == full.part("train", "NBI")
    assert few.part("val", "WLI") == full.part("val", "WLI") and few.part("test", "WLI") == full.part("test", "WLI")
    assert few.part("train", "WLI") == prepare(cfg, tmp_path / "run", progress=False).part("train", "WLI")
