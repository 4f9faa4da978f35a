"""mnist-diffusion: small text- and class-conditioned diffusion models for MNIST-family images, the diffusers way."""

from .hub import push_checkpoint, push_pipeline_to_hub
from .models import MnistUNet2DConditionModel
from .pipelines import (
    DenoisingTrajectory,
    MnistDiffusionPipeline,
    MnistDiffusionPipelineOutput,
    MnistImg2ImgPipeline,
    MnistInpaintPipeline,
)
from .schedulers import MnistDDPMScheduler
from .text_encoding import build_caption_tokenizer, build_text_encoder, build_text_encoder_config

__version__ = "0.1.0"

__all__ = [
    "DenoisingTrajectory",
    "MnistDDPMScheduler",
    "MnistDiffusionPipeline",
    "MnistDiffusionPipelineOutput",
    "MnistImg2ImgPipeline",
    "MnistInpaintPipeline",
    "MnistUNet2DConditionModel",
    "build_caption_tokenizer",
    "build_text_encoder",
    "build_text_encoder_config",
    "push_checkpoint",
    "push_pipeline_to_hub",
]
