"""Models (timm by name, local pretrained weights) and the exported student round trip."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pagkd_core.export import check_onnx, export_student
from pagkd_core.models import build_model
from pagkd_core.student import load_student


@pytest.mark.parametrize(
    "backbone,channels",
    [("resnet10t", 512), ("resnet10t_w50", 256), ("resnet10t_w75", 384), ("mobilenetv3_small_100", 576)],
)
def test_lesionnet_parts(backbone, channels):
    torch.manual_seed(0)
    m = build_model(backbone, 3, embed_dim=16).eval()
    x = torch.randn(2, 3, 64, 64)
    f = m.forward_features(x)
    assert f.shape[:2] == (2, channels) and m.channels == channels
    assert m.embed(f).shape == (2, 16, *f.shape[2:])
    assert torch.allclose(m(x), m.classify(f))
    assert m(x).shape == (2, 3)


def test_own_backbones_are_timm_names_without_weights():
    import timm

    assert {"resnet10t_w50", "resnet10t_w75"} <= set(timm.list_models("resnet10t*"))
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model("resnet10t_w50", pretrained=True)


def test_bad_backbone_and_pretrained_files(tmp_path):
    with pytest.raises(ValueError, match="unknown backbone 'nope'"):
        build_model("nope", 2)
    with pytest.raises(FileNotFoundError, match="pretrained weights not found"):
        build_model("resnet10t", 2, pretrained=tmp_path / "missing.safetensors")
    src = build_model("resnet10t", 2)
    state = {k: v.contiguous() for k, v in src.backbone.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)  # ImageNet head: ignored
    save_file(state, str(tmp_path / "ok.safetensors"))
    m = build_model("resnet10t", 2, pretrained=tmp_path / "ok.safetensors")
    for k, v in src.backbone.state_dict().items():
        assert torch.equal(m.backbone.state_dict()[k], v)
    bad = dict(state)
    bad["conv1.0.weight"] = torch.zeros(1, 1, 1, 1)
    save_file(bad, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="does not match backbone 'resnet10t'.*conv1.0.weight"):
        build_model("resnet10t", 2, pretrained=tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="does not match backbone 'mobilenetv3_small_100'"):
        build_model("mobilenetv3_small_100", 2, pretrained=tmp_path / "ok.safetensors")


def _hub_cache(root, repo: str, state: dict, config: dict) -> Path:
    """A Hugging Face hub cache holding one model repository as `hf download` leaves it; returns
    its weights file."""
    folder, commit = root / ("models--" + repo.replace("/", "--")), "a" * 40
    snap = folder / "snapshots" / commit
    snap.mkdir(parents=True)
    save_file(state, str(snap / "model.safetensors"))
    (snap / "config.json").write_text(json.dumps(config))
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    return snap / "model.safetensors"


# Run in a child process: the hub client reads HF_HUB_CACHE / HF_HUB_OFFLINE when imported.
_HUB_CHILD = """
import sys
from safetensors.torch import load_file
from pagkd_core.config import load_config
from pagkd_core.models import build_model, model_from_config
ref = load_file(sys.argv[1])
cfg = load_config(None, ["student.backbone=resnet10t", "student.pretrained=timm:resnet10t.c3_in1k"])
for m in (model_from_config(cfg.student, ["a", "b"], 16), build_model("resnet10t", 2, pretrained="hf-hub:timm/resnet10t.c3_in1k")):
    own = m.backbone.state_dict()
    assert all(own[k].equal(ref[k]) for k in own), "not the cached weights"
try:
    build_model("resnet18", 2, pretrained="timm:resnet18.a1_in1k")  # not in the cache, and offline
except RuntimeError as e:
    print(e)
"""


def test_pretrained_hub_names_load_from_the_cache_offline(tmp_path):
    import os
    import subprocess
    import sys

    import timm

    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in timm.create_model("resnet10t").state_dict().items()}
    weights = _hub_cache(tmp_path / "hub", "timm/resnet10t.c3_in1k", state,
                         {"architecture": "resnet10t", "num_classes": 1000,
                          "pretrained_cfg": {"classifier": "fc", "num_classes": 1000}})  # as timm publishes it
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", _HUB_CHILD, str(weights)], env=env, capture_output=True, check=False,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    msg = out.stdout.strip().splitlines()
    assert len(msg) == 1 and msg[0].startswith("cannot fetch pretrained weights 'timm:resnet18.a1_in1k'"), msg
    assert "hf download timm/resnet18.a1_in1k" in msg[0] and "local .safetensors" in msg[0]


@pytest.mark.parametrize("name,message", [
    ("timm:resnet10t.nope", "Invalid pretrained tag"),
    ("timm:resnet18.a1_in1k", "holds resnet18 weights but the backbone is resnet10t"),
    ("timm:nope.x", "unknown timm model 'nope'"),
])
def test_bad_hub_names_fail_before_any_download(name, message):
    with pytest.raises(ValueError, match=message):
        build_model("resnet10t", 2, pretrained=name)
    with pytest.raises(ValueError, match="timm has no pretrained weights"):
        build_model("resnet10t_w50", 2, pretrained="timm:resnet10t_w50")


# ONNX export (dynamo) takes seconds per model on 2 cores: done once, on the fp32 case.
@pytest.mark.parametrize("fp16", [False, True])
def test_export_round_trip_and_onnx(tmp_path, fp16, monkeypatch):
    torch.manual_seed(0)
    m = build_model("resnet10t" if not fp16 else "mobilenetv3_small_100", 2).eval()
    meta = export_student(
        m,
        tmp_path / "student",
        class_names=["hyperplastic", "adenoma"],
        input_size=48,
        config_hash="abc",
        metrics={"auc": 0.5},
        train_command="python -m pagkd_core train",
        fp16=fp16,
        onnx=not fp16,
    )
    on_disk = json.loads((tmp_path / "student.json").read_text())
    assert on_disk == meta and on_disk["format"] == "pagkd-student/1" and on_disk["input_size"] == [48, 48]
    # loading must never unpickle
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled"))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load"))
    x = torch.randn(3, 3, 48, 48)
    for path in ("student", "student.json", "student.safetensors"):
        loaded, meta2 = load_student(tmp_path / path)
        assert not loaded.training and meta2["class_names"] == ["hyperplastic", "adenoma"]
        with torch.no_grad():
            diff = (loaded(x) - m(x)).abs().max().item()
        assert diff == 0.0 if not fp16 else diff < 5e-2
    if not fp16:
        assert check_onnx(loaded, tmp_path / "student.onnx", 48, batch_sizes=(1, 4)) < 1e-4


def test_load_student_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="student metadata not found"):
        load_student(tmp_path / "none")
    m = build_model("resnet10t", 2)
    export_student(m, tmp_path / "s", class_names=["a", "b"], input_size=32, onnx=False)
    meta = json.loads((tmp_path / "s.json").read_text())
    (tmp_path / "s.json").write_text(json.dumps(dict(meta, backbone="resnet18")))
    with pytest.raises(ValueError, match="does not match backbone 'resnet18'"):
        load_student(tmp_path / "s.json")
    (tmp_path / "s.json").write_text(json.dumps(dict(meta, format="other")))
    with pytest.raises(ValueError, match="format"):
        load_student(tmp_path / "s")
    with pytest.raises(ValueError, match="3 class names for a 2-class model"):
        export_student(m, tmp_path / "t", class_names=["a", "b", "c"], input_size=32, onnx=False)


def test_export_records_the_output_set_and_modality(tmp_path):
    from pagkd_core.outputs import NO_LESION
    from pagkd_core.student import teacher_stem

    m = build_model("test_resnet", 3, embed_dim=8)
    meta = export_student(m, tmp_path / "s", class_names=[NO_LESION, "hyperplastic", "adenoma"], input_size=32,
                          onnx=False)
    assert meta["outputs"] == {"no_lesion": "no_lesion", "lesion_classes": ["hyperplastic", "adenoma"]}
    assert meta["modality"] == "WLI"
    with pytest.raises(ValueError, match="must be the first class name"):
        export_student(m, tmp_path / "t", class_names=["hyperplastic", NO_LESION, "adenoma"], input_size=32,
                       onnx=False)
    # the NBI teacher goes beside the student, in the same format
    assert teacher_stem(tmp_path / "s.json") == tmp_path / "s.nbi"
    t = export_student(build_model("test_resnet", 2, embed_dim=8), teacher_stem(tmp_path / "s"),
                       class_names=["hyperplastic", "adenoma"], input_size=32, onnx=False, modality="NBI")
    assert t["modality"] == "NBI" and t["outputs"]["no_lesion"] is None
    assert load_student(tmp_path / "s.nbi.json")[1]["modality"] == "NBI"
    assert load_student(tmp_path / "s")[0].num_classes == 3  # the student's own files are untouched
    # a hand-edited output set that contradicts the class list is refused
    (tmp_path / "s.json").write_text(json.dumps(dict(meta, outputs={"no_lesion": None, "lesion_classes": []})))
    with pytest.raises(ValueError, match="do not match class_names"):
        load_student(tmp_path / "s")


def old_student(tmp_path):
    """A two-class student as exported before the output set and modality were recorded: a small
    random export with those keys removed from its JSON (the bundled student now has a no_lesion
    output, so it can no longer stand in for the old format)."""
    torch.manual_seed(0)
    model = build_model("resnet10t_w50", 2)
    export_student(model, tmp_path / "old", class_names=["hyperplastic", "adenoma"], input_size=96,
                   onnx=False, train_command="random init (test)")
    meta = {k: v for k, v in json.loads((tmp_path / "old.json").read_text()).items()
            if k not in ("outputs", "modality")}
    (tmp_path / "old.json").write_text(json.dumps(meta))
    return tmp_path / "old.json", meta


def test_student_without_output_set_still_loads(tmp_path):
    path, meta = old_student(tmp_path)
    model, loaded = load_student(path)
    assert loaded["class_names"] == meta["class_names"] and model.num_classes == len(meta["class_names"])


def test_mil_pool_lets_one_region_carry_a_lesion_and_survives_export(tmp_path):
    from pagkd_core.outputs import NO_LESION

    torch.manual_seed(0)
    mean = build_model("test_resnet", 3, embed_dim=8).eval()
    mil = build_model("test_resnet", 3, embed_dim=8, pool="mil", background=0).eval()
    f = torch.zeros(1, mean.channels, 8, 8)
    with torch.no_grad():
        mean.head.weight.zero_(), mean.head.bias.zero_()
        mean.head.weight[2, 0] = 1.0  # feature 0 is "adenoma here"
        mil.load_state_dict(mean.state_dict())  # no weights of its own: either loads the other's
        f[0, 0, 3, 4] = 20.0  # ... in one region of 64
        z_mean, z_mil = mean.classify(f)[0], mil.classify(f)[0]
        assert torch.allclose(mil.classify(f[..., :1, :1]), mean.classify(f[..., :1, :1]))  # one region: the same
    assert z_mean[2] == pytest.approx(20 / 64) and z_mil[2] > 14  # averaged away vs carried
    assert z_mil[0] == z_mean[0] == 0  # no_lesion: the mean over the regions either way
    # the file records it, the runtime's loader and the ONNX graph read it
    names = [NO_LESION, "hyperplastic", "adenoma"]
    meta = export_student(mil, tmp_path / "s", class_names=names, input_size=32)
    model, loaded = load_student(tmp_path / "s")
    assert loaded["pool"] == "mil" and model.pool == "mil" and model.background == 0
    assert check_onnx(model, tmp_path / "s.onnx", 32) < 1e-4
    assert "pool" not in export_student(mean, tmp_path / "m", class_names=names, input_size=32, onnx=False)
    assert load_student(tmp_path / "m")[0].pool == "mean"  # files before it: mean
    with pytest.raises(ValueError, match="needs a no_lesion class"):
        build_model("test_resnet", 2, pool="mil")
    with pytest.raises(ValueError, match="not one of"):
        build_model("test_resnet", 2, pool="max")
    assert meta["pool"] == "mil"
