"""`python -m pagkd_core.synth {images,frames,video,video-frames,calibrate,figures}`: the synthetic data commands.

`main(argv) -> int` is also what `python -m pagkd_core synth-images / synth-video` calls.
Bad input gives one line on stderr and exit code 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pagkd_core.config import ConfigError, add_config_arguments

from .config import FrameConfig, ImageConfig, VideoConfig, load

PROG = "python -m pagkd_core.synth"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + message
        raise ConfigError(f"{message} (see {self.prog} --help)")


def _classes(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def _common(p: argparse.ArgumentParser):
    add_config_arguments(
        p, "YAML file with config values (flags and --set override it)", "difficulty.wli_pattern=0.3"
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--classes", type=_classes, help="comma list from hyperplastic,adenoma,adenocarcinoma")
    p.add_argument("--no-progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog=PROG, description="SYNTHETIC WLI/NBI endoscopy data (no patient data).")
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    p = sub.add_parser(
        "images", help="lesion images in <out>/<modality>/<class>/<lesion>_<n>.png + manifest.csv"
    )
    p.add_argument("--out", required=True)
    p.add_argument("--lesions-per-class", type=int)
    p.add_argument("--views", type=int, help="views per modality per lesion")
    p.add_argument("--size", type=int, help="square image size in pixels (default 448)")
    p.add_argument("--paired-fraction", type=float, help="fraction of lesions in both modalities")
    p.add_argument("--workers", type=int, help="processes (output does not depend on it)")
    p.add_argument("--border", choices=["round", "octagon", "none", "random"])
    _common(p)
    p = sub.add_parser(
        "frames",
        help="training frames rendered like the videos: <out>/<modality>/<class>/<lesion>_<n>.png + manifest.csv",
    )
    p.add_argument("--out", required=True)
    p.add_argument("--size", type=int, help="square frame size in pixels (default 192)")
    p.add_argument("--lesions-per-class", type=int, help="lesions per class per modality (default 60)")
    p.add_argument("--frames-per-lesion", type=int, help="camera poses per lesion (default 8)")
    p.add_argument("--no-lesion-frames", type=int, help="frames with no lesion, per modality (default 320)")
    p.add_argument("--workers", type=int, help="processes (output does not depend on it)")
    _common(p)
    p = sub.add_parser("video", help="procedure clip <out>.mp4 (H.264) + <out>.truth.csv")
    p.add_argument("--out", required=True, help="output .mp4 path")
    _procedure_arguments(p)
    p.add_argument("--modality", choices=["WLI", "NBI"])
    p.add_argument("--crf", type=int, help="H.264 quality, 0-51 (higher = smaller)")
    p.add_argument(
        "--nbi-fraction",
        type=float,
        help="share of close-viewed lesions with an NBI stretch (default 0.3; 0 = pure WLI)",
    )
    p.add_argument(
        "--find-seed",
        type=int,
        metavar="START",
        help="write the first seed from START whose truth tells the demo story (story.py)",
    )
    p.add_argument("--tries", type=int, default=50, help="seeds --find-seed looks at (default 50)")
    _common(p)
    p = sub.add_parser(
        "video-frames",
        help="training frames cut from procedures (WLI, every n-th frame): frames' layout + manifest.csv",
    )
    p.add_argument("--out", required=True)
    p.add_argument("--seeds", required=True, type=_seeds, help="procedure seeds: A-B (inclusive) or A,B,C")
    _procedure_arguments(p)
    p.add_argument("--frame-size", type=int, default=192, help="square saved frame in pixels (default 192)")
    p.add_argument("--every", type=int, default=4, help="keep every n-th frame of each procedure (default 4)")
    p.add_argument(
        "--min-coverage",
        type=float,
        default=0.05,
        help="leave out frames whose lesion covers less of the field than this (default 0.05)",
    )
    p.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="ROOT",
        help="append another frame set's rows (e.g. `synth frames` output: its NBI frames); repeatable",
    )
    p.add_argument(
        "--workers", type=int, default=1, help="processes, one procedure each (output does not depend on it)"
    )
    add_config_arguments(
        p, "YAML file with VideoConfig values (flags and --set override it)", "difficulty.wli_pattern=0.3"
    )
    p.add_argument("--classes", type=_classes, help="comma list from hyperplastic,adenoma,adenocarcinoma")
    p.add_argument("--no-progress", action="store_true")
    p = sub.add_parser("calibrate", help="train a small CNN per modality; report NBI and WLI AUC")
    from .calibrate import add_arguments

    add_arguments(p)
    p = sub.add_parser("figures", help="README pictures: synth_samples.png and synth_video_frames.png")
    p.add_argument("--out", default="docs/img")
    p.add_argument("--seed", type=int, default=0)
    return ap


def _procedure_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of a procedure's camera and picture (VideoConfig), shared by video and video-frames."""
    p.add_argument("--size", default=None, help="WIDTHxHEIGHT, up to 1920x1080 (default 1280x720)")
    p.add_argument("--fps", type=int, help="frames per second, e.g. 25, 30, 50, 60")
    p.add_argument("--seconds", type=float)
    p.add_argument("--render-scale", type=float, help="render the lumen at this fraction, then upscale")


def _seeds(text: str) -> list[int]:
    try:
        if "-" in text.strip("-"):
            a, b = (int(v) for v in text.split("-"))
            return list(range(a, b + 1))
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds look like 500-515 or 1,2,3 (got {text!r})") from None


def _video_cfg(a) -> VideoConfig:
    size = {}
    if a.size:
        try:
            w, h = (int(v) for v in a.size.lower().split("x"))
        except ValueError:
            raise ConfigError(f"--size must look like 1280x720 (got {a.size!r})") from None
        size = {"width": w, "height": h}
    cfg = load(
        VideoConfig,
        a.config,
        a.overrides,
        seed=getattr(a, "seed", None),
        classes=a.classes,
        fps=a.fps,
        seconds=a.seconds,
        modality=getattr(a, "modality", None),
        crf=getattr(a, "crf", None),
        render_scale=a.render_scale,
        nbi_fraction=getattr(a, "nbi_fraction", None),
        **size,
    )
    if not (16 <= cfg.width <= 1920 and 16 <= cfg.height <= 1080) or cfg.width % 2 or cfg.height % 2:
        raise ConfigError(f"--size {cfg.width}x{cfg.height}: need even sizes up to 1920x1080")
    if not 1 <= cfg.fps <= 120:
        raise ConfigError(f"--fps must be between 1 and 120 (got {cfg.fps})")
    if cfg.seconds <= 0:
        raise ConfigError(f"--seconds must be positive (got {cfg.seconds})")
    if not 0 <= cfg.crf <= 51:
        raise ConfigError(f"--crf must be in 0..51 (got {cfg.crf})")
    if not 0.1 <= cfg.render_scale <= 1.0:
        raise ConfigError(f"--render-scale must be in [0.1, 1] (got {cfg.render_scale})")
    return cfg


def _find_seed(cfg: VideoConfig, start: int, tries: int) -> int:
    """The demo story's seed (story.find_seed), its check per seed and its timeline on stderr."""
    from .story import find_seed, timeline

    if tries < 1:
        raise ConfigError(f"--tries must be at least 1 (got {tries})")
    found = find_seed(cfg, start, tries, log=lambda line: print(line, file=sys.stderr))
    if found is None:
        raise ConfigError(f"no seed in {start}..{start + tries - 1} tells the demo story (try more --tries)")
    seed, rows = found
    print(f"seed {seed}; truth timeline (SYNTHETIC):", *timeline(rows, cfg.fps), sep="\n  ", file=sys.stderr)
    return seed


def run(a) -> int:
    if a.cmd == "images":
        from .dataset import generate_images

        cfg = load(
            ImageConfig,
            a.config,
            a.overrides,
            out=a.out,
            seed=a.seed,
            classes=a.classes,
            lesions_per_class=a.lesions_per_class,
            views=a.views,
            size=a.size,
            paired_fraction=a.paired_fraction,
            workers=a.workers,
            border=a.border,
        )
        manifest = generate_images(cfg, progress=not a.no_progress)
        print(f"wrote {manifest} (SYNTHETIC data)")
    elif a.cmd == "frames":
        from .frames import generate_frames

        cfg = load(
            FrameConfig,
            a.config,
            a.overrides,
            out=a.out,
            seed=a.seed,
            classes=a.classes,
            size=a.size,
            lesions_per_class=a.lesions_per_class,
            frames_per_lesion=a.frames_per_lesion,
            no_lesion_frames=a.no_lesion_frames,
            workers=a.workers,
        )
        manifest = generate_frames(cfg, progress=not a.no_progress)
        print(f"wrote {manifest} (SYNTHETIC frames)")
    elif a.cmd == "video":
        from .dataset import check_writable
        from .video import write_video

        cfg = _video_cfg(a)
        out = Path(a.out)
        if out.suffix.lower() != ".mp4":
            raise ConfigError(f"--out must end in .mp4 (got {out})")
        check_writable(out.parent)
        if a.find_seed is not None:
            cfg.seed = _find_seed(cfg, a.find_seed, a.tries)
        video, truth = write_video(cfg, out, progress=not a.no_progress)
        print(f"wrote {video} and {truth} (SYNTHETIC video)")
    elif a.cmd == "video-frames":
        from .video_frames import generate_video_frames

        manifest = generate_video_frames(
            _video_cfg(a), a.seeds, a.out, size=a.frame_size, every=a.every, min_coverage=a.min_coverage, include=a.include,
            workers=a.workers, progress=not a.no_progress,
        )  # fmt: skip
        print(f"wrote {manifest} (SYNTHETIC frames from {len(a.seeds)} procedures)")
    elif a.cmd == "calibrate":
        from .calibrate import calibrate

        calibrate(a)
    elif a.cmd == "figures":
        from .figures import make_figures

        for path in make_figures(Path(a.out), a.seed):
            print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return run(build_parser().parse_args(argv))
    except ConfigError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
