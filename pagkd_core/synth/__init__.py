"""SYNTHETIC WLI/NBI endoscopy data: lesion images with a manifest, and procedure videos.

No patient data: every picture is drawn from a latent lesion description (see
docs/synthetic_data.md). Entry points: `python -m pagkd_core.synth ...`,
`generate_images(ImageConfig)`, `generate_frames(FrameConfig)`, `write_video(VideoConfig, path)`,
`iter_procedure_frames(VideoConfig)` (the runtime's live synthetic source).
"""

from .config import CLASSES, DEFAULT_CLASSES, MODALITIES, Difficulty, FrameConfig, ImageConfig, VideoConfig
from .dataset import MANIFEST_COLUMNS, generate_images
from .frames import FRAME_COLUMNS, NO_LESION, generate_frames
from .video import TRUTH_COLUMNS, iter_procedure_frames, write_video

__all__ = [
    "CLASSES",
    "DEFAULT_CLASSES",
    "FRAME_COLUMNS",
    "MANIFEST_COLUMNS",
    "MODALITIES",
    "NO_LESION",
    "TRUTH_COLUMNS",
    "Difficulty",
    "FrameConfig",
    "ImageConfig",
    "VideoConfig",
    "generate_frames",
    "generate_images",
    "iter_procedure_frames",
    "write_video",
]
