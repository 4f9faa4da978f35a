"""Load the pipeline a subcommand works on (folder or Hub repo id, optional scheduler swap); shared sampling flags."""

from __future__ import annotations

import argparse
import os

from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, LCMScheduler
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from ..pipelines import MnistDiffusionPipeline
from ..pretrained import DIFFUSION_MODEL
from ..schedulers import MnistDDPMScheduler

# "lcm" is the few-step sampler of distilled (guidance-embedded) models such as the shipped mnist-diffusion-fast.
SCHEDULERS = {
    "ddpm": MnistDDPMScheduler,
    "ddim": DDIMScheduler,
    "dpm": DPMSolverMultistepScheduler,
    "lcm": LCMScheduler,
}


def check_model_argument(model: str | None) -> None:
    """Refuse a `--model` that is neither an existing folder nor shaped like a Hub repo id, before loading it."""
    if model is None or os.path.isdir(model):
        return
    try:
        validate_repo_id(model)
    except HFValidationError:
        raise ValueError(
            f"--model {model!r} is not a folder and not a Hub repo id; expected a pipeline folder written by "
            "`save_pretrained` (or training/train.py) or a repo id like 'user/mnist-diffusion'."
        ) from None


def parse_class_label(value: str | None) -> int | str | None:
    """A `--class-label` value: digits become a class id ("7" -> 7), anything else stays a class name ("Sneaker")."""
    return int(value) if value is not None and value.isdigit() else value


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
    if scheduler is not None and scheduler not in SCHEDULERS:
        raise ValueError(f"Unknown scheduler {scheduler!r}; expected one of {sorted(SCHEDULERS)}.")
    check_model_argument(model)
    pipe = MnistDiffusionPipeline.from_pretrained(DIFFUSION_MODEL if model is None else model)
    if scheduler is not None:
        pipe.scheduler = SCHEDULERS[scheduler].from_config(pipe.scheduler.config)
    return pipe


def add_guidance_interval_arguments(parser: argparse.ArgumentParser) -> None:
    """`--guidance-start` / `--guidance-stop`, the pipeline's guidance interval, for the commands that sample."""
    parser.add_argument(
        "--guidance-start",
        type=float,
        default=0.0,
        help="Start guiding after this fraction of the steps (default 0.0); unguided steps cost half.",
    )
    parser.add_argument(
        "--guidance-stop",
        type=float,
        default=1.0,
        help="Stop guiding after this fraction of the steps (default 1.0: guide to the end).",
    )
