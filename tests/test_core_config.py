"""Typed configs: YAML + overrides, one-line errors, the shipped configs load."""

from __future__ import annotations

from pathlib import Path

import pytest

from pagkd_core.config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_overrides_are_typed(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  lr: 1.0e-3\ndistill:\n  method: pro\n")
    cfg = load_config(
        p,
        [
            "optim.epochs=3",
            "distill.par_dilations=[1,2]",
            "data.classes=adenoma,hyperplastic",
            "distill.use_par=false",
            "optim.lr=0.5",
        ],
    )
    assert cfg.optim.epochs == 3 and cfg.optim.lr == 0.5 and cfg.distill.method == "pro"
    assert cfg.distill.par_dilations == (1, 2) and cfg.distill.use_par is False
    assert cfg.data.classes == ["adenoma", "hyperplastic"]
    assert (
        cfg.hash()
        == load_config(
            p,
            [
                "optim.epochs=3",
                "distill.par_dilations=[1,2]",
                "data.classes=adenoma,hyperplastic",
                "distill.use_par=false",
                "optim.lr=0.5",
                "data.root=/elsewhere",
            ],
        ).hash()
    )
    assert cfg.hash() != load_config(p).hash()


@pytest.mark.parametrize(
    "override,message",
    [
        ("optim.epochs=many", "optim.epochs: cannot read 'many' as int"),
        ("optim.epoch=3", "unknown config key 'optim.epoch'"),
        ("distill.method=magic", "distill.method='magic' is not one of"),
        ("data.fold=7", "data.fold=7 must be in"),
        ("data.jpeg_quality=99", "data.jpeg_quality must be 0 (off) or a JPEG quality"),
        ("data.sample_by=patient", "data.sample_by must be one of image, lesion, got 'patient'"),
        ("optim=3", "'optim' is a section"),
        ("nokey", "must look like section.key=value"),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, [override])


@pytest.mark.parametrize("name", ["paper.yaml", "synthetic_small.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / name)
    if name == "paper.yaml":
        assert (cfg.student.backbone, cfg.data.image_size, cfg.optim.batch_size, cfg.distill.n_queries) == (
            "resnet50",
            448,
            24,
            12,
        )
