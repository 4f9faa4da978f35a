"""Outputs of the mnist-diffusion pipelines: images, and the denoising trajectory for visualisation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.utils import BaseOutput

#: The `output_type`s of the pipelines' calls.
OUTPUT_TYPES = ("pil", "np", "pt", "latent")


@dataclass
class DenoisingTrajectory(BaseOutput):
    r"""
    What the sampler saw at each denoising step, for visualisation.

    Args:
        timesteps (`torch.Tensor`): `(num_steps,)` the scheduler's timesteps, in sampling order.
        latents (`torch.Tensor`): `(num_steps + 1, batch, channels, height, width)`; entry 0 is the initial noise,
            entry `i + 1` the sample after step `i` (x_t going towards x_0).
        pred_original_samples (`torch.Tensor`): `(num_steps, batch, channels, height, width)` the clean image
            predicted at step `i` (after classifier-free guidance), in [-1, 1] up to model error.
    """

    timesteps: torch.Tensor
    latents: torch.Tensor
    pred_original_samples: torch.Tensor


@dataclass
class MnistDiffusionPipelineOutput(ImagePipelineOutput):
    r"""
    Output of [`MnistDiffusionPipeline`], [`MnistImg2ImgPipeline`] and [`MnistInpaintPipeline`].

    Args:
        images (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`): The generated images.
        trajectory ([`DenoisingTrajectory`], *optional*): The denoising trajectory, when `return_trajectory=True`.
    """

    trajectory: DenoisingTrajectory | None = None
