"""Diffusion pipelines of mnist-diffusion (installed as `mnist_diffusion.pipelines`)."""

import diffusers

from .pipeline_mnist_diffusion import DenoisingTrajectory, MnistDiffusionPipeline, MnistDiffusionPipelineOutput

# `DiffusionPipeline.from_pretrained` resolves `model_index.json`'s `_class_name` on the `diffusers` module; making
# the name known there lets the generic loader restore saved pipelines once `mnist_diffusion` is imported.
diffusers.MnistDiffusionPipeline = MnistDiffusionPipeline

__all__ = ["DenoisingTrajectory", "MnistDiffusionPipeline", "MnistDiffusionPipelineOutput"]
