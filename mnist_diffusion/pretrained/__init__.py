"""Paths of the models shipped inside the package (safetensors + config), usable offline with `from_pretrained`."""

from pathlib import Path

PRETRAINED_DIR = Path(__file__).parent

# The released digits pipeline: the default model of the CLI and of the README quickstart.
DIFFUSION_MODEL = PRETRAINED_DIR / "mnist-diffusion"

# Its few-step students (progressive distillation, `training/distill.py --method progressive`): one UNet pass per
# step, the guidance scale embedded (no unconditional pass), DDIM's trailing timesteps. The pipeline's `unet` is the
# 4-step student (it samples 8 steps well too); the 1- and 2-step students are the UNets in `FAST_UNET_SUBFOLDERS`.
FAST_DIFFUSION_MODEL = PRETRAINED_DIR / "mnist-diffusion-fast"

#: The subfolder of `FAST_DIFFUSION_MODEL` holding the UNet distilled for each step count.
FAST_UNET_SUBFOLDERS = {1: "unet_1step", 2: "unet_2step", 4: "unet"}
#: The few-step students' default steps and guidance scale: `generate --fast` and the demo's few-step sampler.
FAST_STEPS, FAST_GUIDANCE_SCALE = 4, 1.45


def fast_unet_subfolder(num_inference_steps: int) -> str:
    r"""
    The subfolder of `FAST_DIFFUSION_MODEL` whose UNet to sample `num_inference_steps` steps with: the student
    distilled for that step count (1 -> "unet_1step", 2 -> "unet_2step"), else the 4-step student ("unet"), which
    samples 3 and 5-8 steps better than the others (model card).

    Example:

    ```py
    >>> from mnist_diffusion import MnistDiffusionPipeline, MnistUNet2DConditionModel
    >>> from mnist_diffusion.pretrained import FAST_DIFFUSION_MODEL, FAST_GUIDANCE_SCALE, fast_unet_subfolder

    >>> unet = MnistUNet2DConditionModel.from_pretrained(FAST_DIFFUSION_MODEL, subfolder=fast_unet_subfolder(1))
    >>> pipe = MnistDiffusionPipeline.from_pretrained(FAST_DIFFUSION_MODEL, unet=unet)
    >>> image = pipe("a thick 7", class_labels=7, num_inference_steps=1, guidance_scale=FAST_GUIDANCE_SCALE).images[0]
    ```
    """
    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps is {num_inference_steps}; expected a positive integer.")
    return FAST_UNET_SUBFOLDERS.get(num_inference_steps, FAST_UNET_SUBFOLDERS[4])


# Scores MNIST samples: conditional accuracy and classifier FID (`training/train_classifier.py`).
MNIST_CLASSIFIER = PRETRAINED_DIR / "mnist-classifier"

# Scores image-prompt agreement (CLIP score, best-of-N selection) and classifies zero-shot (`training/train_clip.py`).
MNIST_CLIP = PRETRAINED_DIR / "mnist-clip"

# Scores Fashion-MNIST samples, chosen by `mnist_diffusion.evaluation` for pipelines with Fashion-MNIST classes.
FASHION_MNIST_CLASSIFIER = PRETRAINED_DIR / "fashion-mnist-classifier"
