"""mnist-diffusion: small text- and class-conditioned diffusion models for MNIST-family images, the diffusers way."""

from .lazy_import import lazy_exports

__version__ = "0.1.0"

# Exports are imported on first use, as diffusers and transformers do for their own top-level packages: `import
# mnist_diffusion` (and with it the command line's `--help`) does not import torch, diffusers or transformers.
_STRUCTURE = {
    "hub": ["push_checkpoint", "push_pipeline_to_hub"],
    "models": ["MnistUNet2DConditionModel"],
    "pipelines": [
        "DenoisingTrajectory",
        "MnistDiffusionPipeline",
        "MnistDiffusionPipelineOutput",
        "MnistImg2ImgPipeline",
        "MnistInpaintPipeline",
    ],
    "schedulers": ["MnistDDPMScheduler"],
    "text_encoding": ["build_caption_tokenizer", "build_text_encoder", "build_text_encoder_config"],
}
__getattr__, __dir__ = lazy_exports(__name__, _STRUCTURE)
__all__ = sorted(name for names in _STRUCTURE.values() for name in names)
