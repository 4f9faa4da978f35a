"""Noise schedulers of mnist-diffusion."""

from .scheduling_mnist_ddpm import (
    MnistDDPMScheduler,
    predict_original_sample,
    predict_original_sample_and_noise,
    renoise,
)

__all__ = ["MnistDDPMScheduler", "predict_original_sample", "predict_original_sample_and_noise", "renoise"]
