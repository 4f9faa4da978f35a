"""Load the pipeline a subcommand works on (folder or Hub repo id, optional scheduler swap); shared flag checks."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import PIL.Image
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, LCMScheduler
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from ..models.unet_mnist import MnistUNet2DConditionModel
from ..pipelines import MnistDiffusionPipeline
from ..pretrained import DIFFUSION_MODEL, FAST_DIFFUSION_MODEL, fast_unet_subfolder
from ..schedulers import MnistDDPMScheduler

# "lcm" is the sampler of students of `training/distill.py --method lcm` (latent consistency distillation).
SCHEDULERS = {
    "ddpm": MnistDDPMScheduler,
    "ddim": DDIMScheduler,
    "dpm": DPMSolverMultistepScheduler,
    "lcm": LCMScheduler,
}
#: The extensions named in errors about image outputs (PIL writes more; any of them is accepted).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")


def looks_like_a_path(value: str) -> bool:
    r"""
    Whether `value` names a local path rather than a Hub repo id: it starts with `.`, `~` or a separator, has more
    than one separator (a repo id has one), or its first part exists here (`outputs/run` with an `outputs` folder).
    """
    normalized = value.replace(os.altsep, os.sep) if os.altsep else value
    return (
        normalized.startswith((".", "~", os.sep))
        or normalized.count(os.sep) > 1
        or os.path.lexists(normalized)
        or os.path.lexists(normalized.split(os.sep, 1)[0])
    )


def check_model_argument(model: str | None) -> None:
    """Refuse a `--model` that is neither an existing folder nor shaped like a Hub repo id, before loading it."""
    if model is None or os.path.isdir(model):
        return
    if looks_like_a_path(model):
        what = "is a file, not a folder" if os.path.exists(model) else "is a path, but that folder does not exist"
        raise ValueError(
            f"--model {model!r} {what}; expected a pipeline folder written by `save_pretrained` (or "
            "training/train.py) or a Hub repo id like 'user/mnist-diffusion'."
        )
    try:
        validate_repo_id(model)
    except HFValidationError:
        raise ValueError(
            f"--model {model!r} is not a folder and not a Hub repo id; expected a pipeline folder written by "
            "`save_pretrained` (or training/train.py) or a repo id like 'user/mnist-diffusion'."
        ) from None


def finite_float(value: str) -> float:
    """An argparse `type`: a finite float (`nan` and `inf` are refused with the flag named by argparse)."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"{value} is not a finite number")
    return number


def _check_parent(flag: str, path: Path) -> None:
    """Refuse `path` when its nearest existing ancestor is a file or cannot be written to."""
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{flag} {str(path)!r} is inside {str(parent)!r}, which is a file; expected a folder path.")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"{flag} {str(path)!r}: cannot write in {str(parent)!r}; expected a writable location.")


def check_image_output(flag: str, path: str | os.PathLike) -> Path:
    """Check, before any work, that an image can be written to `path` (not a folder, an image extension PIL saves)."""
    output = Path(path)
    if output.is_dir():
        raise ValueError(f"{flag} {str(output)!r} is a folder; expected an image file path such as samples.png.")
    formats = PIL.Image.registered_extensions()
    if formats.get(output.suffix.lower()) not in PIL.Image.SAVE:
        saveable = sorted(ext for ext, fmt in formats.items() if fmt in PIL.Image.SAVE and ext in IMAGE_EXTENSIONS)
        raise ValueError(f"{flag} {str(output)!r} has no image extension PIL can write; expected one of {saveable}.")
    _check_parent(flag, output)
    return output


def check_output_folder(flag: str, path: str | os.PathLike) -> Path:
    """Check, before any work, that `path` is a folder or can be created as one."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{flag} {str(folder)!r} is a file; expected a folder (new or existing).")
    _check_parent(flag, folder)
    return folder


def parse_class_label(value: str | None) -> int | str | None:
    """A `--class-label` value: digits become a class id ("7" -> 7), anything else stays a class name ("Sneaker")."""
    return int(value) if value is not None and value.isdigit() else value


def check_scheduler_name(scheduler: str | None) -> None:
    """Refuse (`ValueError`) a scheduler name that is not a key of `SCHEDULERS` (None keeps the model's own)."""
    if scheduler is not None and scheduler not in SCHEDULERS:
        raise ValueError(f"Unknown scheduler {scheduler!r}; expected one of {sorted(SCHEDULERS)}.")


def open_pipeline(model: str | None = None, scheduler: str | None = None) -> MnistDiffusionPipeline:
    r"""
    Load a pipeline from a local folder or a Hub repo id (default: the released model shipped in the package),
    optionally swapping its scheduler ("ddpm", "ddim", "dpm", "lcm").

    Example:

    ```py
    >>> from mnist_diffusion.commands.loading import open_pipeline

    >>> pipe = open_pipeline("path/to/pipeline", scheduler="dpm")  # doctest: +SKIP
    ```
    """
    check_scheduler_name(scheduler)
    check_model_argument(model)
    pipe = MnistDiffusionPipeline.from_pretrained(DIFFUSION_MODEL if model is None else model)
    if scheduler is not None:
        pipe.scheduler = SCHEDULERS[scheduler].from_config(pipe.scheduler.config)
    return pipe


def open_fast_pipeline(num_inference_steps: int, scheduler: str | None = None) -> MnistDiffusionPipeline:
    r"""
    The shipped few-step student for `num_inference_steps` steps: `FAST_DIFFUSION_MODEL` with the UNet distilled for
    that step count ([`~mnist_diffusion.pretrained.fast_unet_subfolder`]), optionally with another scheduler.

    Example:

    ```py
    >>> from mnist_diffusion.commands.loading import open_fast_pipeline

    >>> images = open_fast_pipeline(1)("a thin 3", class_labels=3, num_inference_steps=1, guidance_scale=1.45).images
    ```
    """
    check_scheduler_name(scheduler)
    unet = MnistUNet2DConditionModel.from_pretrained(
        FAST_DIFFUSION_MODEL, subfolder=fast_unet_subfolder(num_inference_steps)
    )
    pipe = MnistDiffusionPipeline.from_pretrained(FAST_DIFFUSION_MODEL, unet=unet)
    if scheduler is not None:
        pipe.scheduler = SCHEDULERS[scheduler].from_config(pipe.scheduler.config)
    return pipe


def add_guidance_interval_arguments(parser: argparse.ArgumentParser) -> None:
    """`--guidance-start` / `--guidance-stop`, the pipeline's guidance interval, for the commands that sample."""
    parser.add_argument(
        "--guidance-start",
        type=finite_float,
        default=0.0,
        help="Start guiding after this fraction of the steps (default 0.0); unguided steps cost half.",
    )
    parser.add_argument(
        "--guidance-stop",
        type=finite_float,
        default=1.0,
        help="Stop guiding after this fraction of the steps (default 1.0: guide to the end).",
    )
