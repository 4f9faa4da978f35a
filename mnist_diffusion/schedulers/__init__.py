"""Noise schedulers of mnist-diffusion."""

from .scheduling_mnist_ddpm import (
    MnistDDPMScheduler,
    ddim_jump,
    ddim_jump_original,
    predict_original_sample,
    predict_original_sample_and_noise,
    renoise,
)

__all__ = [
    "MnistDDPMScheduler",
    "ddim_jump",
    "ddim_jump_original",
    "predict_original_sample",
    "predict_original_sample_and_noise",
    "renoise",
]
