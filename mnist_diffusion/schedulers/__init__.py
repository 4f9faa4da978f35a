"""Noise schedulers of mnist-diffusion."""

from .scheduling_mnist_ddpm import MnistDDPMScheduler, predict_original_sample, renoise

__all__ = ["MnistDDPMScheduler", "predict_original_sample", "renoise"]
