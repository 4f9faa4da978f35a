"""Paths of the models shipped inside the package (safetensors + config), usable offline with `from_pretrained`."""

from pathlib import Path

PRETRAINED_DIR = Path(__file__).parent

# The released digits pipeline: the default model of the CLI and of the README quickstart.
DIFFUSION_MODEL = PRETRAINED_DIR / "mnist-diffusion"

# Its few-step student (latent consistency distillation, `training/distill.py`): 1-4 steps, no unconditional pass.
FAST_DIFFUSION_MODEL = PRETRAINED_DIR / "mnist-diffusion-fast"

# Scores MNIST samples: conditional accuracy and classifier FID (`training/train_classifier.py`).
MNIST_CLASSIFIER = PRETRAINED_DIR / "mnist-classifier"

# Scores image-prompt agreement (CLIP score, best-of-N selection) and classifies zero-shot (`training/train_clip.py`).
MNIST_CLIP = PRETRAINED_DIR / "mnist-clip"

# Scores Fashion-MNIST samples, chosen by `mnist_diffusion.evaluation` for pipelines with Fashion-MNIST classes.
FASHION_MNIST_CLASSIFIER = PRETRAINED_DIR / "fashion-mnist-classifier"
