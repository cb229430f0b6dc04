"""`python -m pagkd_core <command>`: train-teacher, train, evaluate, export, soup, import-checkpoint,
synth-images, synth-frames, synth-video, synth-video-frames.

Every training command takes `--config FILE` and any number of `--set section.key=value`.
Errors in the input are one line on stderr with a non-zero exit (set PAGKD_DEBUG=1 for a traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import sys
from pathlib import Path

from pagkd_core.config import Config, ConfigError, add_config_arguments, load_config, stage_dir


def _common(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p, "YAML config (configs/paper.yaml, configs/synthetic_small.yaml)", "optim.epochs=3")


def _folds(cfg: Config, args) -> list[int]:
    if getattr(args, "folds", None):
        return [int(f) for f in args.folds.split(",")]
    return list(range(cfg.data.folds)) if getattr(args, "all_folds", False) else [cfg.data.fold]


def _for_fold(cfg: Config, fold: int) -> Config:
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, fold=fold))


def cmd_train(args, argv: list[str]) -> int:
    from pagkd_core.train import train_stage

    cfg = load_config(args.config, args.overrides)
    stage = "teacher" if args.command == "train-teacher" else "student"
    for fold in _folds(cfg, args):
        fcfg = _for_fold(cfg, fold)
        best = train_stage(fcfg, stage, resume=args.resume, name=args.name)
        out = stage_dir(fcfg, "teacher" if stage == "teacher" else args.name)
        if out.is_dir():  # rank 0 records how to reproduce the run (export copies it)
            (out / "command.txt").write_text("python -m pagkd_core " + shlex.join(argv) + "\n")
        if best:
            v = best["val"]
            print(
                f"fold {fold}: best epoch {best['epoch']}  val score {v['score']:.4f}  acc {v['accuracy']:.4f}  "
                f"-> {out}"
            )
    return 0


def cmd_evaluate(args, argv) -> int:
    from pagkd_core.evaluate import evaluate
    from pagkd_core.report import fmt, grad_norm_table, metric_rows

    cfg = load_config(args.config, args.overrides)
    stage = "teacher" if args.teacher else args.name
    folds = [int(f) for f in args.folds.split(",")] if args.folds else None
    s = evaluate(cfg, stage, folds, args.out, n_boot=args.n_boot)
    m, ci = s["metrics"], s["ci95"]
    print(f"{stage} on {s['modality']}: {s['n_images']} images, {s['n_lesions']} lesions (synthetic); "
          f"95% CI by {s['bootstrap']['unit']} bootstrap")
    for k, label in metric_rows(s):
        print(f"  {label:60s} {fmt(m[k], ci.get(k))}")
    for line in grad_norm_table(s.get("grad_norm") or {}):
        print(f"  {line}" if line else "")
    return 0


def cmd_export(args, argv) -> int:
    from pagkd_core.checkpoint import load_weights
    from pagkd_core.export import check_onnx, export_student
    from pagkd_core.models import model_from_config

    cfg = load_config(args.config, args.overrides)
    src = stage_dir(cfg, args.name)
    best = src / "best.json"
    if not best.is_file():
        raise FileNotFoundError(
            f"no trained student in {src} (expected best.json); run `python -m pagkd_core train`"
        )
    info = json.loads(best.read_text())
    model = model_from_config(cfg.student, info["class_names"], cfg.distill.embed_dim, pretrained=False)
    load_weights(src / "best.safetensors", {"model": model})
    metrics = {
        "validation": {k: info["val"][k] for k in ("auc", "class_auc", "accuracy", "macro_f1", "n") if k in info["val"]},
        "epoch": info["epoch"],
    }
    if args.report:
        metrics["test_pooled"] = json.loads(Path(args.report).read_text())["metrics"]
    recorded = ([stage_dir(cfg, "teacher") / "command.txt"] if cfg.distill.method != "none" else []) + [
        src / "command.txt"
    ]
    commands = [p.read_text().strip() for p in recorded if p.is_file()]
    train_command = args.train_command or " && ".join(commands)
    meta = export_student(
        model,
        args.out,
        class_names=info["class_names"],
        input_size=cfg.data.image_size,
        config_hash=cfg.hash(),
        metrics=metrics,
        train_command=train_command,
        fp16=args.fp16,
        onnx=not args.no_onnx,
        extra={"distill_method": cfg.distill.method, "fold": cfg.data.fold},
    )
    if not args.no_onnx:
        from pagkd_core.student import load_student

        loaded, _ = load_student(args.out)
        diff = check_onnx(loaded, Path(args.out).with_suffix(".onnx"), cfg.data.image_size)
        print(f"ONNX checked with onnxruntime: max |logit diff| {diff:.2e}")
    print(
        f"exported {meta['backbone']} student -> {Path(args.out).with_suffix('.safetensors')} (+ .json"
        f"{', .onnx' if not args.no_onnx else ''})"
    )
    if args.teacher:
        _export_teacher(cfg, args)
    return 0


def _export_teacher(cfg, args) -> None:
    """The fold's NBI teacher beside the exported student (<out>.nbi.*, same format with
    "modality": "NBI"): the runtime loads it from there for the NBI frames of a stream."""
    from pagkd_core.export import export_student
    from pagkd_core.student import teacher_stem
    from pagkd_core.train import load_teacher

    src = stage_dir(cfg, "teacher")
    if not (src / "best.json").is_file():
        raise FileNotFoundError(f"no trained teacher in {src} (expected best.json); run "
                                f"`python -m pagkd_core train-teacher` with the same config, or drop --teacher")
    info = json.loads((src / "best.json").read_text())
    model = load_teacher(cfg, info["class_names"])
    command = src / "command.txt"
    stem = teacher_stem(args.out)
    export_student(
        model,
        stem,
        class_names=info["class_names"],
        input_size=cfg.data.image_size,
        config_hash=cfg.hash(),
        metrics={"validation": info.get("val", {}), "epoch": info.get("epoch")},
        train_command=command.read_text().strip() if command.is_file() else "",
        fp16=args.fp16,
        onnx=not args.no_onnx,
        extra={"role": "teacher", "fold": cfg.data.fold},
        modality="NBI",
    )
    print(f"exported the NBI teacher -> {stem}.safetensors (+ .json)")


def cmd_soup(args, argv) -> int:
    from pagkd_core.soup import soup

    meta = soup(args.students, args.out, fp16=args.fp16, command="python -m pagkd_core " + shlex.join(argv))
    stem = Path(args.out)
    print(f"wrote the soup of {len(args.students)} students -> {stem}.safetensors (+ .json"
          f"{'; its NBI teacher beside it' if meta['teacher_copied'] else '; no NBI teacher: the students do not share one'})"
          f"; next: benchmarks.int8 for its int8 graph, python -m stream tune for its alert setting")
    return 0


def cmd_import(args, argv) -> int:
    from pagkd_core.export import check_onnx
    from pagkd_core.interop import import_checkpoint
    from pagkd_core.student import load_student, sibling, student_stem

    names = [c.strip() for c in args.class_names.split(",")] if args.class_names else None
    meta = import_checkpoint(args.checkpoint, args.out, args.format, args.input_size, names, onnx=not args.no_onnx,
                             command="python -m pagkd_core " + shlex.join(argv))
    size = meta["input_size"][0]
    src = meta["imported_from"]
    print("dropped (distillation only): "
          + (", ".join(f"{k} ({n} tensor{'s' if n > 1 else ''})" for k, n in src["dropped"].items()) or "nothing"))
    print(f"checked: logits equal torchvision's ResNet-50 holding the checkpoint's student weights "
          f"(max |diff| {src['checked']['max_abs_logit_diff']:.1e})")
    stem = student_stem(args.out)
    if not args.no_onnx:
        loaded, _ = load_student(stem)
        print(f"ONNX checked with onnxruntime: max |logit diff| "
              f"{check_onnx(loaded, sibling(stem, '.onnx'), size, rtol=1e-4):.2e}")  # ResNet-50: large logits
    print(f"input: {size} px, scaled to [0, 1] without mean/std, transposed (C, W, H) as the "
          f"authors feed it; classes {', '.join(meta['class_names'])} (theirs: {', '.join(src['class_names'])})")
    print(f"exported -> {sibling(stem, '.safetensors')} (+ .json{'' if args.no_onnx else ', .onnx'}); "
          f"run it: python -m stream run VIDEO --model {sibling(stem, '.json')}")
    return 0


SYNTH_COMMANDS = ("synth-images", "synth-frames", "synth-video", "synth-video-frames")  # parsed by pagkd_core.synth


def cmd_synth(argv) -> int:
    from pagkd_core.synth.cli import main as synth_main

    mode = argv[0].removeprefix("synth-")
    return int(synth_main([mode, *argv[1:]]) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pagkd_core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, helptext in (
        ("train-teacher", "stage 1: train the NBI teacher"),
        ("train", "stage 2: train the WLI student (distiller from distill.method)"),
    ):
        p = sub.add_parser(name, help=helptext)
        _common(p)
        p.add_argument("--resume", action="store_true", help="continue a killed run from its last epoch")
        p.add_argument("--all-folds", action="store_true", help="train every fold in turn")
        p.add_argument("--folds", help="comma-separated folds to train (default: data.fold)")
        p.add_argument("--name", default="student", help="student run name (folder under fold<k>/)")
        p.set_defaults(func=cmd_train)
    p = sub.add_parser("evaluate", help="pooled k-fold test metrics with bootstrap CIs, plots and report")
    _common(p)
    p.add_argument("--name", default="student")
    p.add_argument("--teacher", action="store_true", help="evaluate the NBI teacher instead")
    p.add_argument("--folds", help="comma-separated folds (default: all)")
    p.add_argument("--out", help="report folder (default: <run.out_dir>/eval-<name>)")
    p.add_argument("--n-boot", type=int, default=1000)
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("export", help="write the student alone: safetensors + JSON (+ ONNX)")
    _common(p)
    p.add_argument("--name", default="student")
    p.add_argument("--out", required=True, help="output stem, e.g. stream/assets/student")
    p.add_argument("--fp16", action="store_true", help="store weights as fp16 (loading casts to fp32)")
    p.add_argument("--no-onnx", action="store_true")
    p.add_argument("--report", help="evaluate's report.json whose pooled test metrics go into the metadata")
    p.add_argument("--train-command", help="reproduce command to record (default: the recorded ones)")
    p.add_argument("--teacher", action="store_true",
                   help="also export the fold's NBI teacher beside the student (<out>.nbi.*) for NBI frames")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("import-checkpoint", help="convert a checkpoint trained elsewhere into an exported student")
    p.add_argument("checkpoint", help="the .pth state dict (read with torch.load(weights_only=True): no code runs)")
    p.add_argument("--format", required=True,
                   help="pagkd-authors: a student checkpoint published by the PaGKD authors (Huster-Hq/PaGKD)")
    p.add_argument("--out", required=True, help="output stem, e.g. authors_f0 (writes .safetensors, .json, .onnx)")
    p.add_argument("--input-size", type=int, help="model input size in pixels (default: the authors', 448)")
    p.add_argument("--class-names", help="comma-separated, in the checkpoint's label order "
                                         "(default: Hyperplasia,Adenoma,Adenocarcinoma)")
    p.add_argument("--no-onnx", action="store_true")
    p.set_defaults(func=cmd_import)
    p = sub.add_parser("soup", help="one student whose weights are the mean of several sibling students")
    p.add_argument("students", nargs="+", help="exported students (.json or stem), fine-tuned from one starting point")
    p.add_argument("--out", required=True, help="output stem (writes .safetensors and .json)")
    p.add_argument("--fp16", action="store_true", help="store weights as fp16 (loading casts to fp32)")
    p.set_defaults(func=cmd_soup)
    for name in SYNTH_COMMANDS:  # parsed by pagkd_core.synth (see main)
        sub.add_parser(name, help=f"synthetic data: see `python -m pagkd_core {name} --help`", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if argv and argv[0] in SYNTH_COMMANDS:
        return cmd_synth(argv)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args, argv)
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError, RuntimeError) as e:
        if os.environ.get("PAGKD_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; continue with --resume", file=sys.stderr)
        return 130
