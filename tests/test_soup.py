"""`python -m pagkd_core soup`: the mean of sibling students' weights, their checks, their teacher."""
import json

import pytest
import torch

from pagkd_core.cli import main
from pagkd_core.export import export_student
from pagkd_core.models import build_model
from pagkd_core.soup import soup
from pagkd_core.student import load_student, teacher_stem

CLASSES = ["no_lesion", "hyperplastic", "adenoma"]


def _student(path, seed: int, classes=CLASSES, teacher_seed: int | None = 0):
    torch.manual_seed(seed)
    model = build_model("resnet10t_w50", len(classes), embed_dim=8, output_stride=16).eval()
    export_student(model, path, class_names=classes, input_size=64, train_command=f"seed {seed}", onnx=False)
    if teacher_seed is not None:
        torch.manual_seed(100 + teacher_seed)
        nbi = build_model("resnet10t_w50", len(classes), embed_dim=8, output_stride=16).eval()
        export_student(nbi, teacher_stem(path), class_names=classes, input_size=64, onnx=False, modality="NBI")
    return model


def test_soup_is_the_mean_and_keeps_a_shared_teacher(tmp_path):
    a, b = _student(tmp_path / "a" / "student", 1), _student(tmp_path / "b" / "student", 2)
    meta = soup([tmp_path / "a" / "student.json", tmp_path / "b" / "student"], tmp_path / "s" / "student")
    got, got_meta = load_student(tmp_path / "s" / "student.json")
    sa, sb, ss = a.state_dict(), b.state_dict(), got.state_dict()
    for k, v in ss.items():
        if v.is_floating_point():
            torch.testing.assert_close(v, (sa[k] + sb[k]) / 2)
        else:
            assert torch.equal(v, sa[k])
    assert got_meta["class_names"] == CLASSES and len(got_meta["soup_of"]) == 2
    assert got_meta["soup_train_commands"] == ["seed 1", "seed 2"] and meta["teacher_copied"]
    assert (tmp_path / "s" / "student.nbi.safetensors").is_file()
    with torch.no_grad():  # a new network, not a copy of the first ingredient
        x = torch.randn(2, 3, 64, 64)
        assert not torch.allclose(got(x), a(x))


def test_different_teachers_are_not_copied(tmp_path):
    _student(tmp_path / "a" / "student", 1, teacher_seed=0)
    _student(tmp_path / "b" / "student", 2, teacher_seed=1)
    meta = soup([tmp_path / "a" / "student", tmp_path / "b" / "student"], tmp_path / "s" / "student")
    assert not meta["teacher_copied"] and not (tmp_path / "s" / "student.nbi.json").exists()


def test_mismatches_are_refused(tmp_path, capsys):
    _student(tmp_path / "a" / "student", 1)
    _student(tmp_path / "b" / "student", 2, classes=["no_lesion", "adenoma", "hyperplastic"])
    with pytest.raises(ValueError, match="class_names"):
        soup([tmp_path / "a" / "student", tmp_path / "b" / "student"], tmp_path / "s" / "student")
    with pytest.raises(ValueError, match="at least two"):
        soup([tmp_path / "a" / "student"], tmp_path / "s" / "student")
    with pytest.raises(ValueError, match="twice"):
        soup([tmp_path / "a" / "student", tmp_path / "a" / "student.json"], tmp_path / "s" / "student")
    rc = main(["soup", str(tmp_path / "a" / "student.json"), str(tmp_path / "missing.json"), "--out",
               str(tmp_path / "s" / "student")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "missing.json" in err[0]


def test_cli_records_its_command(tmp_path):
    _student(tmp_path / "a" / "student", 1)
    _student(tmp_path / "b" / "student", 2)
    rc = main(["soup", str(tmp_path / "a" / "student.json"), str(tmp_path / "b" / "student.json"),
               "--out", str(tmp_path / "s" / "student"), "--fp16"])
    meta = json.loads((tmp_path / "s" / "student.json").read_text())
    assert rc == 0 and meta["train_command"].startswith("python -m pagkd_core soup ")
    assert meta["weights_dtype"] == "float16"
