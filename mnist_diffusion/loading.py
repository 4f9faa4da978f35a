"""Open what the CLI, the demo and bench/ sample with: pipelines (folder or Hub id), schedulers, the students."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .pretrained import DIFFUSION_MODEL, FAST_DIFFUSION_MODEL, fast_unet_subfolder

if TYPE_CHECKING:
    from diffusers import SchedulerMixin

    from .models import MnistUNet2DConditionModel
    from .pipelines import MnistDiffusionPipeline

# torch and diffusers are imported by the functions that load, so that the CLI's parser (which lists the scheduler
# names) starts without them.
#: The schedulers a pipeline can be opened with, by name: `(library, class name)`, as `model_index.json` names
#: components. "lcm" is the sampler of the students of `training/distill.py --method lcm`.
SCHEDULERS = {
    "ddpm": ("mnist_diffusion.schedulers", "MnistDDPMScheduler"),
    "ddim": ("diffusers", "DDIMScheduler"),
    "dpm": ("diffusers", "DPMSolverMultistepScheduler"),
    "lcm": ("diffusers", "LCMScheduler"),
}


def check_scheduler_name(scheduler: str | None) -> None:
    """Refuse (`ValueError`) a scheduler name that is not a key of `SCHEDULERS` (None keeps the model's own)."""
    if scheduler is not None and scheduler not in SCHEDULERS:
        raise ValueError(f"Unknown scheduler {scheduler!r}; expected one of {sorted(SCHEDULERS)}.")


def scheduler_from_config(scheduler: str, config: Any) -> SchedulerMixin:
    r"""
    A new scheduler of the class named `scheduler` (a key of `SCHEDULERS`) with the noise schedule of `config`.

    Example:

    ```py
    >>> from mnist_diffusion.loading import open_pipeline, scheduler_from_config

    >>> pipe = open_pipeline()
    >>> type(scheduler_from_config("ddim", pipe.scheduler.config)).__name__
    'DDIMScheduler'
    ```
    """
    check_scheduler_name(scheduler)
    library, class_name = SCHEDULERS[scheduler]
    return getattr(importlib.import_module(library), class_name).from_config(config)


def parse_class_label(value: str | None) -> int | str | None:
    """A class label as a user types it: digits become a class id ("7" -> 7), anything else a name ("Sneaker")."""
    return int(value) if value is not None and value.isdigit() else value


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
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(model)
    except HFValidationError:
        raise ValueError(
            f"--model {model!r} is not a folder and not a Hub repo id; expected a pipeline folder written by "
            "`save_pretrained` (or training/train.py) or a repo id like 'user/mnist-diffusion'."
        ) from None


def open_pipeline(model: str | None = None, scheduler: str | None = None) -> MnistDiffusionPipeline:
    r"""
    Load a pipeline from a local folder or a Hub repo id (default: the released model shipped in the package),
    optionally swapping its scheduler for one of `SCHEDULERS` ("ddpm", "ddim", "dpm", "lcm").

    Example:

    ```py
    >>> from mnist_diffusion.loading import open_pipeline

    >>> pipe = open_pipeline("path/to/pipeline", scheduler="dpm")  # doctest: +SKIP
    ```
    """
    from .pipelines import MnistDiffusionPipeline

    check_scheduler_name(scheduler)
    check_model_argument(model)
    pipe = MnistDiffusionPipeline.from_pretrained(DIFFUSION_MODEL if model is None else model)
    if scheduler is not None:
        pipe.scheduler = scheduler_from_config(scheduler, pipe.scheduler.config)
    return pipe


def load_fast_unets(step_counts: Iterable[int]) -> dict[int, MnistUNet2DConditionModel]:
    r"""
    The UNets of the shipped few-step students (`FAST_DIFFUSION_MODEL`) for each of `step_counts`: the student
    distilled for that step count ([`~mnist_diffusion.pretrained.fast_unet_subfolder`]); each student is loaded once
    and shared by the step counts it serves.

    Example:

    ```py
    >>> from mnist_diffusion.loading import load_fast_unets

    >>> unets = load_fast_unets(range(1, 9))
    >>> unets[4] is unets[8], unets[1] is unets[2]
    (True, False)
    ```
    """
    from .models import MnistUNet2DConditionModel

    subfolders = {steps: fast_unet_subfolder(steps) for steps in step_counts}
    unets = {
        subfolder: MnistUNet2DConditionModel.from_pretrained(FAST_DIFFUSION_MODEL, subfolder=subfolder)
        for subfolder in dict.fromkeys(subfolders.values())
    }
    return {steps: unets[subfolder] for steps, subfolder in subfolders.items()}


def open_fast_pipeline(num_inference_steps: int, scheduler: str | None = None) -> MnistDiffusionPipeline:
    r"""
    The shipped few-step student for `num_inference_steps` steps: `FAST_DIFFUSION_MODEL` with the UNet distilled for
    that step count ([`load_fast_unets`]), optionally with another scheduler of `SCHEDULERS`.

    Example:

    ```py
    >>> from mnist_diffusion.loading import open_fast_pipeline

    >>> images = open_fast_pipeline(1)("a thin 3", class_labels=3, num_inference_steps=1, guidance_scale=1.45).images
    ```
    """
    from .pipelines import MnistDiffusionPipeline

    check_scheduler_name(scheduler)
    unet = load_fast_unets([num_inference_steps])[num_inference_steps]
    pipe = MnistDiffusionPipeline.from_pretrained(FAST_DIFFUSION_MODEL, unet=unet)
    if scheduler is not None:
        pipe.scheduler = scheduler_from_config(scheduler, pipe.scheduler.config)
    return pipe


def fast_views(base: MnistDiffusionPipeline, step_counts: Iterable[int]) -> dict[int, MnistDiffusionPipeline]:
    r"""
    Views of `base` (the released pipeline, whose text encoder and tokenizer the students share) with the shipped
    few-step student of each of `step_counts` ([`load_fast_unets`]) and the students' `DDIMScheduler`, a new
    instance per view (a scheduler keeps per-call state); `from_pipe` copies no weight.

    Example:

    ```py
    >>> from mnist_diffusion.loading import fast_views, open_pipeline

    >>> base = open_pipeline()
    >>> views = fast_views(base, [1, 4])
    >>> views[1].text_encoder is base.text_encoder, views[1].unet is views[4].unet
    (True, False)
    ```
    """
    from diffusers import DDIMScheduler

    from .pipelines import MnistDiffusionPipeline

    config = DDIMScheduler.load_config(FAST_DIFFUSION_MODEL, subfolder="scheduler")
    return {
        steps: MnistDiffusionPipeline.from_pipe(base, unet=unet, scheduler=DDIMScheduler.from_config(config))
        for steps, unet in load_fast_unets(step_counts).items()
    }
