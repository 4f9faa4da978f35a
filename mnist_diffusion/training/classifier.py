"""The recipe of the MnistClassifier that scores samples, callable in-process: `train_classifier(data, ...)`."""

from __future__ import annotations

import math
from collections.abc import Callable

import datasets
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed

from ..classifier import MnistClassifier
from ..data import ImageClassData, prepare_training_data
from .loop import run_training_loop
from .optimization import build_optimizer


def random_affine(
    images: torch.Tensor, strength: float, generator: torch.Generator, background: float = 0.0
) -> torch.Tensor:
    r"""
    Jitter a batch with small random rotations (up to 10 deg), scalings (up to 10%) and shifts (up to 2 px at 28x28).

    `strength` scales all three ranges; 0 returns the images unchanged. Handwriting varies in exactly these ways, so
    the classifier generalises to generated digits drawn a little off-centre or tilted. Pixels moved in from outside
    the image get the value `background` (0 for images in [0, 1], -1 for a diffusion model's [-1, 1]).
    """
    if strength == 0:
        return images
    batch, size = images.shape[0], images.shape[-1]

    def uniform(limit: float) -> torch.Tensor:
        return (torch.rand(batch, generator=generator) * 2 - 1) * limit * strength

    angle, scale = uniform(math.radians(10)), 1 + uniform(0.1)
    shift = torch.stack([uniform(2 * 2 / size), uniform(2 * 2 / size)], dim=1)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], dim=1)
    theta = torch.cat([theta, shift[:, :, None]], dim=2).to(images)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images - background, grid, align_corners=False, padding_mode="zeros") + background


@torch.no_grad()
def accuracy(classifier: MnistClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of `classifier` on uint8 `images`."""
    predicted, _ = classifier.predict(images.float() / 255)
    return (predicted == labels).float().mean().item()


def train_classifier(
    train_data: ImageClassData | datasets.Dataset,
    num_epochs: int = 4,
    batch_size: int = 128,
    learning_rate: float = 3e-3,
    weight_decay: float = 1e-4,
    augment: float = 1.0,
    seed: int = 0,
    num_steps: int | None = None,
    image_column: str = "image",
    label_column: str = "label",
    end_of_epoch: Callable[[int, MnistClassifier], None] | None = None,
    accelerator: Accelerator | None = None,
) -> MnistClassifier:
    r"""
    Train an [`~mnist_diffusion.classifier.MnistClassifier`] on labelled images, the recipe of
    `training/train_classifier.py` (and of the shipped scoring classifier): AdamW with weight decay, a cosine schedule
    after a short warm-up, random affine jitter, batches in an order reshuffled each epoch from `seed`.

    Args:
        train_data ([`~mnist_diffusion.data.ImageClassData`] or `datasets.Dataset`): The labelled images; a dataset
            is decoded with `image_column` and `label_column` (a `ClassLabel` or integer column).
        num_epochs (`int`): Passes over the data; `num_steps` (optimizer updates) overrides it.
        batch_size (`int`), learning_rate (`float`), weight_decay (`float`): The optimisation settings.
        augment (`float`): Strength of the random affine jitter ([`random_affine`]); 0 turns it off.
        seed (`int`): Initial weights, data order and jitter.
        end_of_epoch (`Callable[[int, MnistClassifier], None]`, *optional*): Called after each epoch with the epoch
            and the classifier (e.g. to evaluate it); the classifier goes back to train mode after it.
        accelerator (`Accelerator`, *optional*): Where to train; default: a new `Accelerator()`.

    Returns:
        The trained classifier, in eval mode, its `id2label` the data's class names.

    Example:

    ```py
    >>> from mnist_diffusion.data import load_split, prepare_training_data
    >>> from mnist_diffusion.training.classifier import accuracy, train_classifier

    >>> classifier = train_classifier(load_split("ylecun/mnist", split="train"), num_epochs=1)
    >>> test = prepare_training_data(load_split("ylecun/mnist", split="test"))
    >>> accuracy(classifier, test.images, test.labels)
    0.98...
    ```
    """
    if isinstance(train_data, datasets.Dataset):
        train_data = prepare_training_data(train_data, image_column=image_column, label_column=label_column)
    for name, value in (("num_epochs", num_epochs), ("batch_size", batch_size), ("num_steps", num_steps)):
        if value is not None and value < 1:
            raise ValueError(f"{name} is {value}; expected a positive integer.")
    if learning_rate <= 0:
        raise ValueError(f"learning_rate is {learning_rate}; expected a value > 0.")
    if augment < 0:
        raise ValueError(f"augment is {augment}; expected a value >= 0.")
    accelerator = accelerator or Accelerator()
    set_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    classifier = MnistClassifier(
        num_classes=len(train_data.label_names), sample_size=train_data.images.shape[-1], id2label=train_data.id2label
    )
    steps_per_epoch = math.ceil(len(train_data.labels) / batch_size)
    max_train_steps = num_steps or num_epochs * steps_per_epoch
    optimizer, lr_scheduler = build_optimizer(
        list(classifier.named_parameters()),
        learning_rate=learning_rate,
        num_training_steps=max_train_steps,
        num_warmup_steps=min(100, steps_per_epoch),
        weight_decay=weight_decay,
    )
    classifier, optimizer = accelerator.prepare(classifier, optimizer)

    def epoch_batches(epoch: int) -> list[torch.Tensor]:
        return torch.randperm(len(train_data.labels), generator=generator).split(batch_size)

    def compute_loss(indices: torch.Tensor) -> torch.Tensor:
        images = random_affine(train_data.images[indices].float() / 255, augment, generator)
        logits = classifier(images.to(accelerator.device))
        return F.cross_entropy(logits, train_data.labels[indices].to(accelerator.device))

    def unwrapped() -> MnistClassifier:
        return accelerator.unwrap_model(classifier)

    run_training_loop(
        accelerator,
        [classifier],
        optimizer,
        lr_scheduler,
        epoch_batches,
        compute_loss,
        max_train_steps=max_train_steps,
        updates_per_epoch=steps_per_epoch,
        images_per_update=batch_size,
        end_of_epoch=None if end_of_epoch is None else lambda epoch: end_of_epoch(epoch, unwrapped()),
        description="classifier",
    )
    return unwrapped().eval()
