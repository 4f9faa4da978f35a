"""Classification Accuracy Score: train the classifier recipe on generated images and on real ones, test on real."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch

from .data import ImageClassData, load_split, prepare_training_data
from .pipelines import MnistDiffusionPipeline
from .synthetic_dataset import generate_dataset, is_finished_dataset
from .training.classifier import accuracy, train_classifier


@dataclass(frozen=True)
class ClassificationAccuracyScore:
    r"""
    Test accuracy of the same classifier recipe trained on `num_images` generated images and on as many real ones.

    Args:
        synthetic_accuracy (`float`): Accuracy on the real test images of the classifier trained on generated ones
            (the CAS of Ravuri and Vinyals, 2019).
        real_accuracy (`float`): The same for the classifier trained on real training images.
        num_images (`int`): Training images on each side.
        num_steps (`int`): Optimizer updates on each side.
        num_test_images (`int`): Real test images.
    """

    synthetic_accuracy: float
    real_accuracy: float
    num_images: int
    num_steps: int
    num_test_images: int

    @property
    def ratio(self) -> float:
        """`synthetic_accuracy / real_accuracy`: 1.0 means the generated images stand in fully for real ones."""
        return self.synthetic_accuracy / self.real_accuracy

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}

    def to_markdown(self) -> str:
        return (
            "| trained on | test accuracy |\n| --- | --- |\n"
            f"| {self.num_images} generated images | {self.synthetic_accuracy:.2%} |\n"
            f"| {self.num_images} real images | {self.real_accuracy:.2%} |\n\n"
            f"CAS ratio {self.ratio:.4f} ({self.num_steps} steps each, {self.num_test_images} real test images).\n"
        )


def subset(data: ImageClassData, num_images: int, seed: int) -> ImageClassData:
    """`num_images` images of `data` drawn without replacement from `seed` (all of them, reordered, when as many)."""
    if not 1 <= num_images <= len(data.labels):
        raise ValueError(f"num_images is {num_images}; expected 1 to {len(data.labels)} (the images available).")
    indices = torch.randperm(len(data.labels), generator=torch.Generator().manual_seed(seed))[:num_images]
    return ImageClassData(data.images[indices], data.labels[indices], data.label_names)


def read_or_generate_dataset(
    pipe: MnistDiffusionPipeline,
    output_dir: str | os.PathLike,
    num_images: int,
    *,
    resolution: int = 28,
    **generate_kwargs,
) -> ImageClassData:
    r"""
    The images of the [`~mnist_diffusion.synthetic_dataset.generate_dataset`] folder `output_dir`, read at
    `resolution`: a finished folder (one with its dataset card) is read as it is, anything else is first generated
    (or resumed) with `generate_dataset(pipe, output_dir, num_images, **generate_kwargs)`.

    Example:

    ```py
    >>> from mnist_diffusion.cas import read_or_generate_dataset
    >>> from mnist_diffusion.loading import open_fast_pipeline

    >>> pipe = open_fast_pipeline(4)
    >>> synthetic = read_or_generate_dataset(pipe, "synthetic-mnist", 1000, num_inference_steps=4, guidance_scale=1.45)
    >>> synthetic.images.shape
    torch.Size([1000, 1, 28, 28])
    ```
    """
    if not is_finished_dataset(output_dir):
        generate_dataset(pipe, output_dir, num_images, **generate_kwargs)
    return prepare_training_data(load_split(str(output_dir)), resolution=resolution)


def subset_accuracy(
    train: ImageClassData,
    test: ImageClassData,
    *,
    num_steps: int,
    num_images: int | None = None,
    seed: int = 0,
    **training_kwargs,
) -> float:
    """Test accuracy of the classifier recipe trained `num_steps` updates on `num_images` of `train` (all: None)."""
    if train.label_names != test.label_names:
        raise ValueError(f"The training images have classes {train.label_names}; expected {test.label_names}.")
    data = subset(train, len(train.labels) if num_images is None else num_images, seed)
    classifier = train_classifier(data, num_steps=num_steps, seed=seed, **training_kwargs)
    return accuracy(classifier, test.images, test.labels)


def classification_accuracy_score(
    synthetic: ImageClassData,
    real_train: ImageClassData,
    real_test: ImageClassData,
    *,
    num_steps: int,
    num_images: int | None = None,
    seed: int = 0,
    **training_kwargs,
) -> ClassificationAccuracyScore:
    r"""
    Train [`~mnist_diffusion.training.classifier.train_classifier`]'s recipe on `num_images` generated images and on
    `num_images` real training images (random subsets drawn from `seed`) for the same `num_steps`, and test both on
    `real_test` ([`subset_accuracy`] twice).

    Args:
        synthetic, real_train, real_test ([`~mnist_diffusion.data.ImageClassData`]): Generated images (e.g. a
            [`~mnist_diffusion.synthetic_dataset.generate_dataset`] folder read with `prepare_training_data`), real
            training images and the real test split; the class names must agree.
        num_steps (`int`): Optimizer updates per side.
        num_images (`int`, *optional*): Images per side; default: all the generated ones.
        seed (`int`): The subsets, initial weights, data order and jitter (the same on both sides).
        training_kwargs: Passed on to `train_classifier` (`batch_size`, `learning_rate`, `augment`, ...).

    Example:

    ```py
    >>> from mnist_diffusion.cas import classification_accuracy_score
    >>> from mnist_diffusion.data import load_split, prepare_training_data

    >>> real = {split: prepare_training_data(load_split("ylecun/mnist", split=split)) for split in ("train", "test")}
    >>> synthetic = prepare_training_data(load_split("synthetic-mnist"))  # written by `generate-dataset`
    >>> score = classification_accuracy_score(synthetic, real["train"], real["test"], num_steps=3000)
    >>> print(score.to_markdown())  # doctest: +SKIP
    ```
    """
    num_images = len(synthetic.labels) if num_images is None else num_images
    common = {"num_steps": num_steps, "num_images": num_images, "seed": seed, **training_kwargs}
    return ClassificationAccuracyScore(
        synthetic_accuracy=subset_accuracy(synthetic, real_test, **common),
        real_accuracy=subset_accuracy(real_train, real_test, **common),
        num_images=num_images,
        num_steps=num_steps,
        num_test_images=len(real_test.labels),
    )
