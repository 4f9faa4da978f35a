"""Neural networks of mnist-diffusion."""

from .unet_mnist import MnistUNet2DConditionModel

__all__ = ["MnistUNet2DConditionModel"]
