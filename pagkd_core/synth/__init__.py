"""SYNTHETIC WLI/NBI endoscopy data: lesion images with a manifest, and procedure videos.

No patient data: every picture is drawn from a latent lesion description (see
docs/synthetic_data.md). Entry points: `python -m pagkd_core.synth ...`,
`generate_images(ImageConfig)`, `write_video(VideoConfig, path)`,
`iter_procedure_frames(VideoConfig)` (the runtime's live synthetic source).
"""

from .config import CLASSES, DEFAULT_CLASSES, MODALITIES, Difficulty, ImageConfig, VideoConfig
from .dataset import MANIFEST_COLUMNS, generate_images
from .video import TRUTH_COLUMNS, iter_procedure_frames, write_video

__all__ = [
    "CLASSES",
    "DEFAULT_CLASSES",
    "MANIFEST_COLUMNS",
    "MODALITIES",
    "TRUTH_COLUMNS",
    "Difficulty",
    "ImageConfig",
    "VideoConfig",
    "generate_images",
    "iter_procedure_frames",
    "write_video",
]
