"""Diffusion pipelines of mnist-diffusion (installed as `mnist_diffusion.pipelines`)."""

import diffusers

from .pipeline_mnist_diffusion import MnistDiffusionPipeline
from .pipeline_mnist_img2img import MnistImg2ImgPipeline
from .pipeline_mnist_inpaint import MnistInpaintPipeline
from .pipeline_output import DenoisingTrajectory, MnistDiffusionPipelineOutput

# `DiffusionPipeline.from_pretrained` resolves `model_index.json`'s `_class_name` on the `diffusers` module; making
# the names known there lets the generic loader restore saved pipelines once `mnist_diffusion` is imported.
diffusers.MnistDiffusionPipeline = MnistDiffusionPipeline
diffusers.MnistImg2ImgPipeline = MnistImg2ImgPipeline
diffusers.MnistInpaintPipeline = MnistInpaintPipeline

__all__ = [
    "DenoisingTrajectory",
    "MnistDiffusionPipeline",
    "MnistDiffusionPipelineOutput",
    "MnistImg2ImgPipeline",
    "MnistInpaintPipeline",
]
