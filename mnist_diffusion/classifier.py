"""`MnistClassifier`: a small CNN that recognises MNIST-family classes and embeds images for classifier FID."""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3x3 convolutions with batch norm and ReLU, then 2x2 max pooling."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class MnistClassifier(ModelMixin, ConfigMixin):
    r"""
    A small CNN classifier for 28x28 grayscale images, used to score generated samples.

    Takes images as floats in [0, 1] (what `MnistDiffusionPipeline(..., output_type="pt")` returns), shaped
    `(batch, in_channels, height, width)`. [`~MnistClassifier.features`] returns the penultimate `feature_dim`
    activations, the embedding in which "classifier FID" and precision/recall are measured.

    Args:
        num_classes (`int`, defaults to 10): Number of classes.
        in_channels (`int`, defaults to 1): Image channels.
        sample_size (`int`, defaults to 28): Image height and width (a multiple of 4).
        block_out_channels (`tuple[int]`, defaults to `(32, 64)`): Width of the two convolution blocks.
        feature_dim (`int`, defaults to 128): Size of the feature embedding.
        dropout (`float`, defaults to 0.3): Dropout before the last layer.
        id2label (`dict[str, str]`, *optional*): Class names, as the pipeline stores them.

    Example:

    ```py
    >>> import torch
    >>> from mnist_diffusion.classifier import MnistClassifier

    >>> classifier = MnistClassifier().eval()
    >>> images = torch.rand(4, 1, 28, 28)
    >>> classifier(images).shape, classifier.features(images).shape
    (torch.Size([4, 10]), torch.Size([4, 128]))
    ```
    """

    @register_to_config
    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        sample_size: int = 28,
        block_out_channels: tuple[int, int] = (32, 64),
        feature_dim: int = 128,
        dropout: float = 0.3,
        id2label: dict[str, str] | None = None,
    ):
        super().__init__()
        if sample_size % 4:
            raise ValueError(f"sample_size is {sample_size}; expected a multiple of 4 (two 2x poolings).")
        first, second = block_out_channels
        self.blocks = nn.Sequential(conv_block(in_channels, first), conv_block(first, second))
        self.embed = nn.Sequential(
            nn.Flatten(), nn.Linear(second * (sample_size // 4) ** 2, feature_dim), nn.ReLU(inplace=True)
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))

    def _check(self, images: torch.Tensor) -> torch.Tensor:
        expected = (self.config.in_channels, self.config.sample_size, self.config.sample_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"Images have shape {tuple(images.shape)}; expected (batch, {', '.join(map(str, expected))})."
            )
        return images.to(self.dtype) * 2 - 1

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The `feature_dim`-dimensional embedding of images in [0, 1]."""
        return self.embed(self.blocks(self._check(images)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits `(batch, num_classes)` for images in [0, 1]."""
        return self.head(self.features(images))

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Predicted class ids and features of `images`, computed in eval mode in batches."""
        was_training = self.training
        self.eval()
        labels, features = [], []
        for batch in images.split(batch_size):
            feats = self.features(batch.to(self.device))
            features.append(feats.float().cpu())
            labels.append(self.head(feats).argmax(dim=1).cpu())
        self.train(was_training)
        return torch.cat(labels), torch.cat(features)
