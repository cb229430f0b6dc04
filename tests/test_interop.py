"""`python -m pagkd_core import-checkpoint --format pagkd-authors`: a network built to the PaGKD
authors' published description, saved as their state dict, converted, gives its logits through
load_student and through `python -m stream run` (their preprocessing: [0, 1], no mean/std, H/W
transposed). The reference network is written here from that description (a torchvision-layout
ResNet-50 with a 1x1 2048->128 embedding without bias, beside distillation-only parts), not copied
from their code; 64 px and a few images keep a ResNet-50 fast on CPU."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from pagkd_core import cli
from pagkd_core.student import load_student
from stream.preprocess import resize_area

SIZE, CLASSES = 64, 3


# -- the authors' architecture, from its public description ----------------------------------
class Bottleneck(nn.Module):
    """torchvision's ResNet-50 block layout: 1x1 -> 3x3 (carries the stride) -> 1x1 (x4)."""

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = 4 * width
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class Student(nn.Module):
    """ResNet-50 (conv1, bn1, layer1-4, fc) plus conv_embedd, which only the distillation reads."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
        self.relu, self.maxpool = nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        cin, layers = 64, []
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            layers.append(nn.Sequential(*[Bottleneck(cin if i == 0 else 4 * width, width, stride if i == 0 else 1)
                                          for i in range(blocks)]))
            cin = 4 * width
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.conv_embedd = nn.Conv2d(2048, 128, 1, bias=False)
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        f = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(f.mean(dim=(2, 3)))


class AuthorsModel(nn.Module):
    """The checkpoint's top level: the student and parts only the distillation uses."""

    def __init__(self, num_classes: int = CLASSES):
        super().__init__()
        self.student = Student(num_classes)
        self.lb_token1 = nn.Parameter(torch.randn(12, 128))
        self.CA = nn.MultiheadAttention(128, 16, batch_first=True)
        self.cls = nn.Module()
        self.cls.fc = nn.Linear(128, num_classes)


def randomised(net: nn.Module, head: nn.Linear) -> nn.Module:
    """``net`` with random BatchNorm affines and statistics too, so a tensor mapped to the wrong
    place shows. The statistics are those of the test pictures (one pass in training mode, as
    training leaves them; with default ones a random ResNet gives every input about the same
    logits), and ``head`` is scaled to logits of a few units around zero: a softmax far from
    saturated, so the probabilities compared below carry the logits' differences. Kept well
    conditioned, as trained networks are: small residual branches (the bottlenecks' last scale)
    and no near-zero variance, else one float32 rounding of the input moves the logits by 1e-4."""
    gen = torch.Generator().manual_seed(1)
    for name, m in net.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            scale = 0.2 if name.endswith("bn3") else 1.0
            m.weight.data.copy_(scale * (0.5 + torch.rand(m.num_features, generator=gen)))
            m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=gen))
            m.momentum = None  # cumulative average: the pass below sets the statistics
    x = torch.stack([authors_input(p) for p in pictures(8)])  # the 4 test pictures and 4 more
    with torch.no_grad():
        net.train()(x)
        net.eval()
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.add_(0.5 * m.running_var.mean())
        nn.init.normal_(head.weight, generator=gen)
        head.weight.mul_(2.0 / net(x).std(0).mean())
        head.bias.sub_(net(x).mean(0))
    return net


def pictures(n: int = 4, h: int = 80, w: int = 96, seed: int = 0) -> list[np.ndarray]:
    """Non-square RGB pictures with structure along one axis only, so a transposed input differs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for i in range(n):
        base = 128 + 90 * np.sin(xx / (3 + i + seed)) + 20 * rng.standard_normal((h, w))
        rgb = np.stack([base, 0.6 * base + 40 * (yy / h), 255 - base], -1)
        out.append(np.clip(rgb, 0, 255).astype(np.uint8))
    return out


def authors_input(rgb: np.ndarray, transpose: bool = True) -> torch.Tensor:
    """Their test-time input, with our resize: [0, 1], no mean/std, np.swapaxes(image, 0, -1)."""
    pic = np.empty((SIZE, SIZE, 3), np.uint8)
    resize_area(rgb, (0, 0, rgb.shape[1], rgb.shape[0]), pic)
    img = pic.astype(np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(np.swapaxes(img, 0, -1) if transpose else img.transpose(2, 0, 1)))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(reference network, its checkpoint, the converted student's stem, the command's output)."""
    torch.manual_seed(0)
    ref = AuthorsModel().eval()
    randomised(ref.student, ref.student.fc)
    tmp = tmp_path_factory.mktemp("authors")
    ckpt, stem = tmp / "poly_student_model-16.pth", tmp / "authors_f0"
    torch.save(ref.state_dict(), ckpt)  # as they publish it: a state dict of the whole model
    threads = torch.get_num_threads()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli.main(["import-checkpoint", str(ckpt), "--format", "pagkd-authors", "--out", str(stem),
                       "--input-size", str(SIZE), "--no-onnx"])
    assert rc == 0, out.getvalue()
    yield ref, ckpt, stem, out.getvalue()
    torch.set_num_threads(threads)


def test_convert_and_load_student_gives_their_logits(converted):
    ref, ckpt, stem, out = converted
    assert "dropped (distillation only): CA (4 tensors), cls (2 tensors), lb_token1 (1 tensor)" in out
    meta = json.loads(stem.with_suffix(".json").read_text())
    assert meta["mean"] == [0.0] * 3 and meta["std"] == [1.0] * 3 and meta["transpose_hw"] is True
    assert meta["input_size"] == [SIZE, SIZE] and meta["backbone"] == "resnet50" and meta["synthetic"] is False
    assert meta["class_names"] == ["hyperplastic", "adenoma", "adenocarcinoma"]
    src = meta["imported_from"]
    assert src["class_names"] == ["Hyperplasia", "Adenoma", "Adenocarcinoma"] and src["trained_input_size"] == 448
    assert src["dropped"] == {"CA": 4, "cls": 2, "lb_token1": 1} and src["file"] == ckpt.name
    assert src["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert src["checked"]["max_abs_logit_diff"] < 1e-4 and "research use" in src["terms"]

    model, _ = load_student(stem)
    x = torch.stack([authors_input(p) for p in pictures(2)])
    with torch.no_grad():
        ours, theirs = model(x), ref.student(x)
    assert theirs.abs().max() > 0.1  # logits that mean something
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert torch.equal(model.proj.weight, ref.student.conv_embedd.weight) and not model.proj.bias.any()


def stream_run(model_json, tmp_path, engine: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """(probabilities `python -m stream run` logs for a folder of the test pictures, the pictures)."""
    from stream import cli as stream_cli
    from stream.sinks import read_predictions

    frames = tmp_path / "frames"
    frames.mkdir()
    pics = pictures(4)
    for i, p in enumerate(pics):
        Image.fromarray(p).save(frames / f"{i:03d}.png")
    pred = tmp_path / "p.jsonl"
    rc = stream_cli.main(["run", str(frames), "--model", str(model_json), "--engine", engine, "--device", "cpu",
                          "--threads", "1", "--batch", "2", "--fast", "--no-detect-area", "--no-detect-modality",
                          "--smoothing", "none", "--predictions", str(pred), "-q"])
    assert rc == 0
    return np.array([r["probs"] for r in read_predictions(pred)]), pics


def softmax_on(net: nn.Module, pics, transpose: bool = True, layout=torch.contiguous_format) -> np.ndarray:
    """``net``'s probabilities on the pictures as the authors prepare them; ``layout``: the memory
    format to compute in (float32 convolutions round differently per layout, by ~1e-4 here)."""
    import copy

    x = torch.stack([authors_input(p, transpose) for p in pics]).contiguous(memory_format=layout)
    with torch.no_grad():
        return torch.softmax(copy.deepcopy(net).to(memory_format=layout)(x), 1).numpy()


def test_stream_run_logs_their_probabilities(converted, tmp_path):
    ref, _, stem, _ = converted
    logged, pics = stream_run(stem.with_suffix(".json"), tmp_path, "torch")
    # The reference in the torch engine's memory layout (channels_last): then the two networks
    # compute the same float32 operations and the log's 6 decimals are the only difference.
    expected = softmax_on(ref.student, pics, layout=torch.channels_last)
    np.testing.assert_allclose(logged, expected, atol=1e-5)
    assert np.abs(softmax_on(ref.student, pics, transpose=False) - expected).max() > 0.05  # the transpose shows


def test_onnxruntime_lane_reads_a_transposed_student_too(tmp_path, monkeypatch):
    # The transpose happens in the preprocessor, before any engine: the ONNX Runtime lane (its
    # graph exported on demand into the cache) gets what the torch one gets. A small network here.
    from pagkd_core.export import export_student
    from pagkd_core.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet10t_w50", CLASSES, embed_dim=8)
    randomised(model, model.head)
    export_student(model, tmp_path / "small", class_names=["hyperplastic", "adenoma", "adenocarcinoma"],
                   input_size=SIZE, mean=(0.0,) * 3, std=(1.0,) * 3, transpose=True, onnx=False)
    monkeypatch.setenv("PAGKD_CACHE", str(tmp_path / "cache"))
    logged, pics = stream_run(tmp_path / "small.json", tmp_path, "onnxruntime")
    assert list((tmp_path / "cache" / "onnx").glob("small-*.onnx"))
    expected = softmax_on(model, pics)
    np.testing.assert_allclose(logged, expected, atol=1e-4)  # ONNX Runtime's kernels: float32 rounding
    assert np.abs(softmax_on(model, pics, transpose=False) - expected).max() > 0.05


def test_refused_checkpoints_are_one_line(tmp_path, capsys):
    torch.save(nn.Linear(2, 2), tmp_path / "module.pth")  # a pickled module: needs code to load
    torch.save({"backbone.weight": torch.zeros(2)}, tmp_path / "other.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    ref = AuthorsModel(num_classes=2)
    torch.save(ref.state_dict(), tmp_path / "two.pth")
    cases = [("module.pth", [], "refused: loading it would run code (torch.nn.modules.linear.Linear)"),
             ("other.pth", [], "no 'student.*' tensors"),
             ("junk.pth", [], "not a PyTorch checkpoint"),
             ("missing.pth", [], "checkpoint not found"),
             ("two.pth", [], "2 classes but 3 class names"),
             ("two.pth", ["--format", "other"], "unknown checkpoint format 'other'")]
    for name, extra, message in cases:
        argv = ["import-checkpoint", str(tmp_path / name), "--format", "pagkd-authors", "--out",
                str(tmp_path / "s"), "--no-onnx", *extra]
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (name, err)
    assert not (tmp_path / "s.json").exists()
