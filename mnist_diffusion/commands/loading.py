"""Load the pipeline a subcommand works on, from a folder or a Hub repo id, with an optional scheduler swap."""

from __future__ import annotations

from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from ..pipelines import MnistDiffusionPipeline
from ..pretrained import DIFFUSION_MODEL
from ..schedulers import MnistDDPMScheduler

SCHEDULERS = {"ddpm": MnistDDPMScheduler, "ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler}


def open_pipeline(model: str | None = None, scheduler: str | None = None) -> MnistDiffusionPipeline:
    r"""
    Load a pipeline from a local folder or a Hub repo id (default: the released model shipped in the package),
    optionally swapping its scheduler ("ddpm", "ddim", "dpm").

    Example:

    ```py
    >>> from mnist_diffusion.commands.loading import open_pipeline

    >>> pipe = open_pipeline("path/to/pipeline", scheduler="dpm")  # doctest: +SKIP
    ```
    """
    if scheduler is not None and scheduler not in SCHEDULERS:
        raise ValueError(f"Unknown scheduler {scheduler!r}; expected one of {sorted(SCHEDULERS)}.")
    pipe = MnistDiffusionPipeline.from_pretrained(DIFFUSION_MODEL if model is None else model)
    if scheduler is not None:
        pipe.scheduler = SCHEDULERS[scheduler].from_config(pipe.scheduler.config)
    return pipe
