"""The sampling protocol of the evaluations: class prompts, settings, and seeded batches (sample i: seed + i)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from ..captions import caption_templates

if TYPE_CHECKING:
    from ..pipelines import MnistDiffusionPipeline, MnistDiffusionPipelineOutput


def class_prompt(label_name: str) -> str:
    r"""
    The prompt that asks for a class: its first "a ..." phrasing ("a handwritten 7", "a sneaker").

    Example:

    ```py
    >>> from mnist_diffusion.evaluation import class_prompt

    >>> class_prompt("7"), class_prompt("Sneaker")
    ('a handwritten 7', 'a sneaker')
    ```
    """
    return next(t for t in caption_templates(label_name, "label") if t.startswith("a "))


@dataclass(frozen=True)
class SamplingSettings:
    r"""
    How [`sample_batches`] calls the pipeline: guidance (scale and the fraction of steps it covers), steps, the first
    seed and the images per call.

    Example:

    ```py
    >>> from mnist_diffusion.evaluation import SamplingSettings

    >>> SamplingSettings(guidance_scale=2.0, num_inference_steps=20).guidance_stop
    1.0
    ```
    """

    guidance_scale: float = 3.0
    num_inference_steps: int = 50
    seed: int = 0
    batch_size: int = 100
    guidance_start: float = 0.0
    guidance_stop: float = 1.0


def sample_batches(
    pipe: MnistDiffusionPipeline,
    labels: torch.Tensor,
    prompts: Sequence[str],
    settings: SamplingSettings,
    *,
    conditioning: str,
    return_trajectory: bool = False,
    desc: str = "sampling",
) -> Iterator[tuple[slice, MnistDiffusionPipelineOutput]]:
    r"""
    Generate one sample per entry of `labels`/`prompts` (used as `conditioning` says), `settings.batch_size` at a
    time, with a tqdm progress bar, yielding `(positions, output)` per batch with `output_type="pt"` images in [0, 1].

    Sample `i` starts from the noise of `torch.Generator().manual_seed(settings.seed + i)`, so it does not depend on
    the batch size, and requests with the same positions share their noise (paired comparisons). The pipeline's own
    progress bar is silenced meanwhile.
    """
    batch_size, seed = settings.batch_size, settings.seed
    if batch_size < 1:
        raise ValueError(f"batch_size is {batch_size}; expected a positive integer.")
    previous_config = getattr(pipe, "_progress_bar_config", {}).copy()
    pipe.set_progress_bar_config(disable=True)
    try:
        with tqdm(total=len(labels), desc=desc, unit="image") as progress:
            for start in range(0, len(labels), batch_size):
                positions = slice(start, min(start + batch_size, len(labels)))
                output = pipe(
                    prompt=list(prompts[positions]) if "prompt" in conditioning else None,
                    class_labels=labels[positions].tolist() if "label" in conditioning else None,
                    num_inference_steps=settings.num_inference_steps,
                    guidance_scale=settings.guidance_scale,
                    guidance_start=settings.guidance_start,
                    guidance_stop=settings.guidance_stop,
                    generator=[torch.Generator().manual_seed(seed + i) for i in range(start, positions.stop)],
                    output_type="pt",
                    return_trajectory=return_trajectory,
                )
                yield positions, output
                progress.update(positions.stop - start)
    finally:
        pipe._progress_bar_config = previous_config
