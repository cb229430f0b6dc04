"""The student's input size from a measured curve (issue 14): video accuracy against CPU int8 cost.

    python -m benchmarks.input_size --teacher-backbone runs/video_student/teacher_backbone.safetensors
    python -m benchmarks.input_size --test-time-only --model stream/assets/student.json
    python -m benchmarks.input_size --quick          # tiny sizes and data: checks the whole path

Per size S of ``--sizes`` (default 128,192,256), in ``OUT/s<S>/``: (1) the student, trained as the
bundled video student was (docs/training.md, "Bundled student"; the chain is ``train_command`` in
stream/assets/student.json): ``python -m pagkd_core train`` on ``configs/video_student.yaml``, WLI
only, ``data.image_size=S``, the backbone initialised from ONE NBI teacher's backbone for every
size (it does not depend on the input size), then ``export``; with ``--test-time-only``, no
training: ``--model``'s weights at S (its JSON with ``input_size`` S, the weights linked beside
it). (2) Its int8 graph, ``python -m benchmarks.int8 ... --for-isa avx2`` as the bundled one.
(3) Its smoothing + alert setting chosen on VALIDATION videos by ``python -m stream tune``
(int8), and evaluate's figures for that setting (FIGURES). Then the cost of every size in ONE
timing run (int8 and fp32 ONNX Runtime, interleaved rounds: a change in the shared machine's load
hits every size alike; ratios to 192 px) and OUT/input_size.{md,json,png}.

``--teacher-backbone`` is what ``student.pretrained`` reads: the ``model.backbone.*`` tensors of a
teacher checkpoint, prefix ``model.`` dropped. Given the checkpoint itself
(``runs/video_student/fold0/teacher/best.safetensors``) they are extracted into
OUT/teacher_backbone.safetensors, as the bundled train_command's one-liner does. The students use
the teacher's split (``splits.json`` beside the backbone or in the teacher's run, or ``--splits``):
none validates on a patient its backbone was trained on.

Resumable: a step runs only when its output is missing or older than its input (make's rule), so
a second launch skips finished sizes, an interrupted training resumes, a larger ``--epochs``
extends the runs, and the cost run is reused while no graph changed.

Held-out videos (seeds 1000 and up, benchmarks.video) are NEVER used: the size is a choice, made on
validation videos (default: seeds 900-907 under out/val_videos); a ``procedure_s<seed>`` video
with a held-out seed is refused. All data and models are SYNTHETIC.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

from benchmarks.input_size_report import FIGURES, measure_cost, say, write_report
from stream.engines import EngineError
from stream.tune import DEFAULT_GRID, tune
from stream.video_metrics_report import fmt  # the evaluation report's own formats

NAME, CONFIG = "wli_tinit", "configs/video_student.yaml"  # the bundled student's run name and config
DEFAULT_VIDEOS = ("out/val_videos/1280x720_60s_seeds900-901", "out/val_videos/1280x720_60s_seeds902-907")
MAKE_VIDEOS = ("make_videos([VideoSet('1280x720', 60, (900, 901)), VideoSet('1280x720', 60, "
               "tuple(range(902, 908)))], Path('out/val_videos'), quiet=False)")
# --quick: a few training steps on a tiny frames set (as tests/test_core_fixtures.TINY does)
QUICK_SETS = ("optim.batch_size=4", "optim.steps_per_epoch=2", "teacher_optim.epochs=1", "teacher_optim.batch_size=4",
              "teacher_optim.steps_per_epoch=2", "data.folds=2", "data.val_fraction=0.34", "run.threads=1")
QUICK_GRID = "smoothing=ema:alpha=0.3|window:size=8;threshold=0.6,0.7"


class StepFailed(RuntimeError):
    pass


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        sizes = []
    if not sizes or len(set(sizes)) != len(sizes) or min(sizes) < 16:
        raise ValueError(f"--sizes {text!r}: give distinct square sizes in pixels, at least 16, e.g. 128,192,256")
    return sorted(sizes)


def stale(target: Path, *inputs: Path) -> bool:
    """Make's rule: the target is missing or older than one of its inputs (links followed)."""
    return not target.is_file() or any(target.stat().st_mtime < p.stat().st_mtime for p in inputs)


def call(main, argv: list[str], what: str) -> None:
    """A project command in-process; a non-zero exit (it printed its one-line error) stops the run."""
    rc = main(argv)
    if rc:
        raise StepFailed(f"{what} failed (exit {rc}): see the error above")


# -- the student at each size --------------------------------------------------------------
def teacher_backbone(path: Path, out: Path) -> Path:
    """``path`` itself when it holds backbone weights; from a teacher checkpoint, its backbone
    written to ``out`` (as in the bundled train_command)."""
    from safetensors.torch import load_file, save_file
    weights = load_file(str(path))
    if not any(k.startswith("model.backbone.") for k in weights):
        return path
    if stale(out, path):
        out.parent.mkdir(parents=True, exist_ok=True)
        save_file({k.removeprefix("model."): v.contiguous() for k, v in weights.items()
                   if k.startswith("model.backbone.")}, str(out))
        say(f"teacher backbone of {path} -> {out}")
    return out


def train_and_export(args, size: int, sdir: Path) -> Path:
    """Train (resumed, or skipped when finished) and export the size's student; its JSON."""
    from pagkd_core.cli import main as core
    from pagkd_core.config import load_config, stage_dir
    sets = [*args.set, "distill.method=none", f"student.pretrained={args.teacher_backbone}",
            f"data.image_size={size}", f"run.out_dir={sdir / 'train'}", f"optim.epochs={args.epochs}",
            "run.progress=false"]
    stage = stage_dir(load_config(args.config, sets), NAME)
    done = json.loads((stage / "last.json").read_text())["epoch"] if (stage / "last.json").is_file() else 0
    if done < args.epochs:
        if args.splits and not (sdir / "train" / "splits.json").is_file():  # the teacher's split
            (sdir / "train").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(args.splits, sdir / "train" / "splits.json")
        say(f"{size} px: training epochs {done + 1}-{args.epochs} -> {stage}")
        call(core, ["train", "--config", args.config, "--name", NAME, "--resume",
                    *[x for s in sets for x in ("--set", s)]], f"training at {size} px")
    student = sdir / "student.json"
    if stale(student.with_suffix(".safetensors"), stage / "best.safetensors"):
        say(f"{size} px: exporting -> {student}")
        call(core, ["export", "--config", str(stage / "config.json"), "--name", NAME, "--out", str(sdir / "student"),
                    "--fp16", "--no-onnx"], f"export at {size} px")
    else:
        say(f"{size} px: export up to date ({'best epoch unchanged' if done < args.epochs else 'trained, skipped'})")
    return student


def resized_copy(model: str, size: int, sdir: Path) -> Path:
    """``model``'s weights at ``size``: its JSON with ``input_size`` changed, weights linked. Its
    alert setting and metrics were made at the trained size, so they are left out."""
    from pagkd_core.student import meta_path, read_meta, sibling
    stem, _ = read_meta(model)  # checks it
    meta = json.loads(meta_path(model).read_text())  # as written, without what checking adds
    meta = {k: v for k, v in meta.items() if k not in ("alert_setting", "alert_setting_chosen_on", "onnx")}
    meta.update(input_size=[size, size], metrics={},
                resized_from={"model": str(model), "input_size": meta["input_size"]})
    sdir.mkdir(parents=True, exist_ok=True)
    student, weights = sdir / "student.json", sdir / "student.safetensors"
    source = sibling(stem, ".safetensors").resolve()
    if not (weights.is_symlink() and weights.resolve() == source):
        weights.unlink(missing_ok=True)
        try:
            weights.symlink_to(source)
        except OSError:  # no links on this file system
            shutil.copy2(source, weights)
    text = json.dumps(meta, indent=1) + "\n"
    if not student.is_file() or student.read_text() != text:  # unchanged: keeps its time, so nothing reruns
        student.write_text(text)
    return student


def int8_graph(args, student: Path, size: int, splits: str | None) -> Path:
    from benchmarks.int8 import main as int8_main
    from stream.engines.model_source import ModelSource
    graph = student.with_suffix(".int8.onnx")
    if not stale(graph, student, student.with_suffix(".safetensors")) and \
            ModelSource.from_path(student).int8_onnx_path() is not None:  # its record names these weights
        say(f"{size} px: int8 graph up to date, skipped")
        return graph
    say(f"{size} px: calibrating the int8 graph on {args.calib} -> {graph}")
    fold = str(json.loads(student.read_text()).get("fold", 0))  # the student's own fold
    argv = ["--model", str(student), "--calib", str(args.calib), "--for-isa", "avx2",
            *(["--splits", splits, "--fold", fold] if splits else []),
            *(["--count", "16", "--eval-count", "32", "--seconds", "0.05"] if args.quick else ["--seconds", "0.5"])]
    graph.unlink(missing_ok=True)  # a failed calibration must not leave the old graph looking current
    try:
        with open(student.parent / "int8.log", "w") as log, contextlib.redirect_stdout(log):  # its JSON record
            call(int8_main, argv, f"int8 calibration at {size} px")
    except BaseException:
        graph.unlink(missing_ok=True)  # a graph whose check failed is not up to date on the next launch
        raise
    return graph


def tune_size(args, student: Path, size: int, sdir: Path) -> dict:
    """The setting chosen on the validation videos and evaluate's figures for it."""
    out, preds = sdir / "tune", sdir / "preds"
    t = json.loads((out / "tune.json").read_text()) if (out / "tune.json").is_file() else {}
    same = t.get("grid") == args.grid and t.get("videos") == [str(v) for v in args.video_files]
    if same and not stale(out / "tune.json", student.with_suffix(".int8.onnx")):
        say(f"{size} px: setting chosen before ({t['chosen']}), skipped")
    else:
        shutil.rmtree(preds, ignore_errors=True)  # raw probabilities of an older graph: never mixed in
        say(f"{size} px: choosing the setting on {len(args.video_files)} validation videos (int8)")
        t = tune([*map(str, args.videos), "--model", str(student), "--out", str(out), "--predictions-dir",
                  str(preds), "--grid", args.grid, "--engine", "onnxruntime", "--device", "cpu", "--precision", "int8",
                  *(["--max-frames", str(args.max_frames)] if args.max_frames else [])])
    pooled = json.loads((out / "evaluate" / "report.json").read_text())["pooled"][t["chosen"]]
    return {"setting": t["chosen"], "met_bound": t["met_bound"], "tune": str(out / "tune.md"),
            **{k: pooled.get(k) for k in [*dict(FIGURES), "close_view_lesions", "no_lesion_minutes"]}}


# -- setup and the command ----------------------------------------------------------------------
def quick_setup(args) -> None:
    """What --quick makes when not given: a tiny frames set, a few-step teacher, a short video."""
    from pagkd_core.cli import main as core
    from pagkd_core.synth.cli import main as synth
    q = args.out / "quick"
    if args.calib is None:
        args.calib = q / "frames"
        if not (args.calib / "manifest.csv").is_file():  # 12 patients per modality: both in every split
            say(f"quick: tiny frames set -> {args.calib}")
            call(synth, ["frames", "--out", str(args.calib), "--size", "48", "--lesions-per-class", "4",
                         "--frames-per-lesion", "2", "--no-lesion-frames", "8", "--set", "lesions_per_patient=1",
                         "--no-progress"], "synth-frames")
    args.set = [*QUICK_SETS, f"data.root={args.calib}", *args.set]
    if not args.test_time_only and args.teacher_backbone is None:
        run = q / "teacher_run"
        if not (run / "fold0" / "teacher" / "best.safetensors").is_file():
            say(f"quick: a teacher of a few steps -> {run}")
            sets = [*args.set, "data.image_size=32", f"run.out_dir={run}", "run.progress=false"]
            call(core, ["train-teacher", "--config", args.config, "--resume",
                        *[x for s in sets for x in ("--set", s)]], "teacher training")
        args.teacher_backbone = run / "fold0" / "teacher" / "best.safetensors"  # extracted by resolve
    if not args.videos:  # a validation seed with a close view, made in-process (no fork after torch)
        video = q / "videos" / "procedure_s901.mp4"
        if not video.with_suffix(".truth.csv").is_file():
            call(synth, ["video", "--out", str(video), "--size", "160x90", "--seconds", "10", "--seed", "901",
                         "--no-progress"], "synth-video")
        args.videos = [video.parent]


def resolve(args) -> None:
    """Defaults that depend on the mode, and the checks that fail before any work (one line each)."""
    from benchmarks.video import HELDOUT_SEED
    from stream.video_eval import find_videos
    args.sizes = parse_sizes(args.sizes or ("32,48,64" if args.quick else "128,192,256"))
    args.reference = 192 if 192 in args.sizes else args.sizes[len(args.sizes) // 2]
    args.epochs = args.epochs or (1 if args.quick else 30)
    args.grid = args.grid or (QUICK_GRID if args.quick else DEFAULT_GRID)
    args.out = Path(args.out or ("out/input_size_quick" if args.quick else
                                 "out/input_size_test_time" if args.test_time_only else "out/input_size"))
    if args.quick:
        quick_setup(args)
    args.videos = args.videos or [v for v in DEFAULT_VIDEOS if Path(v).is_dir()]
    if not args.videos:
        raise FileNotFoundError(f"no validation videos in {' or '.join(DEFAULT_VIDEOS)}: make them with "
                                f"benchmarks.video's {MAKE_VIDEOS}, or give --videos")
    args.video_files = find_videos([str(v) for v in args.videos])
    held = [v for v in args.video_files
            if (m := re.fullmatch(r"procedure_s(\d+)", v.stem)) and int(m[1]) >= HELDOUT_SEED]
    if held:
        raise ValueError(f"{held[0]} is a held-out video (seed >= {HELDOUT_SEED}); the size is chosen on "
                         "validation videos")
    if args.test_time_only:
        if args.model is None:
            from stream.config import bundled_model
            args.model = os.path.relpath(bundled_model())
        args.calib = args.calib or Path("data/frames_v1")
    else:
        if args.teacher_backbone is None:
            raise ValueError("give --teacher-backbone FILE (see --help), or --test-time-only")
        given = Path(args.teacher_backbone)
        args.teacher_backbone = teacher_backbone(given, args.out / "teacher_backbone.safetensors")
        # the teacher's split: beside its backbone file, or in its run folder (<run>/fold<k>/teacher/best.*)
        found = [p for p in (given.parent / "splits.json", given.parent.parent.parent / "splits.json") if p.is_file()]
        args.splits = args.splits or (str(found[0]) if found else None)
        if args.calib is None:
            from pagkd_core.config import load_config
            args.calib = Path(load_config(args.config, args.set).data.root)
    if not Path(args.calib).exists():
        raise FileNotFoundError(f"calibration frames {args.calib} not found (python -m pagkd_core synth-frames, "
                                "or give --calib)")


def check_plan(args) -> None:
    """One --out holds one curve: resizes of one student, or students from one teacher backbone;
    another is refused rather than mixed into its table."""
    mine = {"mode": "test-time-only", "model": str(args.model)} if args.test_time_only else \
        {"mode": "trained per size", "teacher_backbone": str(args.teacher_backbone)}
    plan = args.out / "plan.json"
    if plan.is_file() and json.loads(plan.read_text()) != mine:
        raise ValueError(f"{args.out} holds another curve ({plan.read_text().strip()}); give another --out")
    args.out.mkdir(parents=True, exist_ok=True)
    plan.write_text(json.dumps(mine) + "\n")


def run(args, command: str) -> None:
    students, rows = {}, []
    for i, size in enumerate(args.sizes, 1):
        sdir = args.out / f"s{size}"
        say(f"[{i}/{len(args.sizes)}] {size} px")
        if args.test_time_only:
            student, splits = resized_copy(args.model, size, sdir), args.splits
        else:
            student, splits = train_and_export(args, size, sdir), str(sdir / "train" / "splits.json")
        graph = int8_graph(args, student, size, splits if splits and Path(splits).is_file() else None)
        made = json.loads(graph.with_suffix(".json").read_text()) if graph.with_suffix(".json").is_file() else {}
        rows.append({"size": size, "student": str(student), **tune_size(args, student, size, sdir),
                     **{f"int8_{k}": made.get(k) for k in ("top1_agreement", "probe_agreement")}})
        students[size] = student
    cost = measure_cost(students, args.batch, 0.05 if args.quick else args.seconds, args.out)
    for r in rows:
        for p in ("int8", "fp32"):
            r[f"{p}_images_per_s"] = cost["images_per_s"][f"{p}@{r['size']}"]
    write_report(args, rows, cost, command)
    say(f"wrote {args.out / 'input_size.md'} (+ .json, .png)")
    for r in rows:
        say(f"{r['size']:>4} px: int8 {r['int8_images_per_s']:.0f} images/s ({r['int8_ratio']:.2f}x of "
            f"{args.reference} px); first call right {fmt(r['close_first_call_correct'])}, class AUC "
            f"{fmt(r['auc_class_close'])}, presence AUC {fmt(r['auc_presence'])}")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.input_size", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("--sizes", help="comma-separated square input sizes (default 128,192,256; --quick 32,48,64)")
    ap.add_argument("--out", help="output folder (default out/input_size, out/input_size_test_time with "
                                  "--test-time-only, out/input_size_quick with --quick)")
    ap.add_argument("--videos", nargs="+", help=f"VALIDATION videos or folders (default: {' '.join(DEFAULT_VIDEOS)} "
                                                "when present)")
    ap.add_argument("--teacher-backbone", help="safetensors of the NBI teacher's backbone (student.pretrained), "
                                               "or the teacher's best.safetensors to extract it from")
    ap.add_argument("--test-time-only", action="store_true", help="no training: --model's weights at every size")
    ap.add_argument("--model", help="with --test-time-only: exported student (default: the bundled one)")
    ap.add_argument("--config", default=CONFIG, help=f"training config (default {CONFIG})")
    ap.add_argument("--epochs", type=int, help="student epochs (default 30, as the bundled one; --quick 1)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for training")
    ap.add_argument("--splits", help="the teacher's splits.json (default: beside --teacher-backbone, or in its run)")
    ap.add_argument("--calib", type=Path, help="int8 calibration frames (default: the config's data.root; "
                                               "data/frames_v1 with --test-time-only)")
    ap.add_argument("--grid", help="stream tune's grid (default: its own; --quick a small one)")
    ap.add_argument("--max-frames", type=int, default=0, help="frames per video to evaluate (0: all)")
    ap.add_argument("--batch", type=int, default=8, help="batch size of the cost run")
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per engine in the cost run")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, data and runs (a smoke test, not a result)")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    command = "python -m benchmarks.input_size " + shlex.join(argv)
    try:
        resolve(args)
        check_plan(args)
        run(args, command)
    except (FileNotFoundError, ValueError, StepFailed, EngineError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
