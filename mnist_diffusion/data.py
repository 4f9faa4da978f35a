"""Load MNIST-style datasets (Hub id, parquet, `save_to_disk` or image folder) into uint8 training tensors."""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass

import datasets
import numpy as np
import torch
from PIL import Image


@dataclass
class ImageClassData:
    r"""
    A training split decoded once into tensors.

    Args:
        images (`torch.Tensor`): `uint8` images `(num_samples, 1, resolution, resolution)`, white ink on black.
        labels (`torch.Tensor`): `int64` class ids `(num_samples,)`.
        label_names (`list[str]`): Name of each class id, from the dataset's `ClassLabel`.
        captions (`list[str]`, *optional*): One caption per image, when the dataset has a caption column.
    """

    images: torch.Tensor
    labels: torch.Tensor
    label_names: list[str]
    captions: list[str] | None = None

    @property
    def id2label(self) -> dict[str, str]:
        """`{"0": name, ...}` as `MnistDiffusionPipeline` stores it."""
        return {str(i): name for i, name in enumerate(self.label_names)}


def load_split(
    dataset_name: str, dataset_config_name: str | None = None, split: str = "train", cache_dir: str | None = None
) -> datasets.Dataset:
    r"""
    Load one split of a dataset given as a Hub id or a local folder.

    A local folder may be written by `Dataset.save_to_disk`/`DatasetDict.save_to_disk` (what
    `mnist_diffusion.idx_conversion` produces), hold parquet files in the Hub layout (`train-00000-of-00001.parquet`,
    ...), or be an image folder (one sub-folder per class). Anything else is looked up on the Hub.

    Example:

    ```py
    >>> from mnist_diffusion.data import load_split

    >>> train = load_split("ylecun/mnist")  # or "zalando-datasets/fashion_mnist", or a local folder
    >>> train.features["label"].names[:3]
    ['0', '1', '2']
    ```
    """
    is_saved = os.path.isdir(dataset_name) and any(
        os.path.isfile(os.path.join(dataset_name, marker)) for marker in ("dataset_dict.json", "state.json")
    )
    if is_saved:
        for state_file in glob.glob(os.path.join(dataset_name, "state.json")) + glob.glob(
            os.path.join(dataset_name, "*", "state.json")
        ):
            with open(state_file) as f:
                if not json.load(f).get("_data_files"):
                    raise ValueError(f"{os.path.dirname(state_file)!r} is an empty dataset; expected examples.")
        loaded = datasets.load_from_disk(dataset_name)
    else:
        try:
            loaded = datasets.load_dataset(dataset_name, dataset_config_name, cache_dir=cache_dir)
        except ValueError as error:
            if "corresponds to no data" not in str(error):
                raise
            raise ValueError(f"{dataset_name!r} has an empty split ({error}); expected examples in each.") from error
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise ValueError(f"Split {split!r} not found in {dataset_name!r}; expected one of {list(loaded)}.")
        return loaded[split]
    if split != "train":
        raise ValueError(f"{dataset_name!r} is a single dataset without splits; expected --train_split 'train'.")
    return loaded


def decode_images(dataset: datasets.Dataset, image_column: str, resolution: int) -> torch.Tensor:
    r"""
    Decode an image column into a `uint8` tensor `(num_samples, 1, resolution, resolution)`.

    Images are converted to grayscale ("L"); they are resized (bilinear, antialiased) only when their size differs
    from `resolution`.
    """
    array = np.empty((len(dataset), resolution, resolution), dtype=np.uint8)
    for i, image in enumerate(dataset[image_column]):
        if not isinstance(image, Image.Image):
            raise ValueError(f"Row {i} of column {image_column!r} is a {type(image).__name__}; expected an image.")
        image = image.convert("L")
        if image.size != (resolution, resolution):
            image = image.resize((resolution, resolution), Image.Resampling.BILINEAR)
        array[i] = np.asarray(image)
    return torch.from_numpy(array).unsqueeze(1)


def prepare_training_data(
    dataset: datasets.Dataset,
    image_column: str = "image",
    label_column: str = "label",
    caption_column: str | None = None,
    resolution: int = 28,
    max_train_samples: int | None = None,
) -> ImageClassData:
    r"""
    Check a split's columns and decode it once into [`ImageClassData`].

    Raises `ValueError` (before any decoding) when a column is missing, the image column does not hold images, the
    label column is neither a `ClassLabel` nor integers, the caption column does not hold strings, or the split is
    empty. Only the first `max_train_samples` rows are kept.

    Example:

    ```py
    >>> from mnist_diffusion.data import load_split, prepare_training_data

    >>> data = prepare_training_data(load_split("ylecun/mnist"), max_train_samples=1000)
    >>> data.images.shape, data.id2label["7"]
    (torch.Size([1000, 1, 28, 28]), '7')
    ```
    """
    columns = list(dataset.column_names)
    for flag, column in (("--image_column", image_column), ("--label_column", label_column)) + (
        (("--caption_column", caption_column),) if caption_column else ()
    ):
        if column not in columns:
            raise ValueError(f"{flag} {column!r} is not a column of the dataset; expected one of {columns}.")
    features = dataset.features
    if not isinstance(features[image_column], datasets.Image):
        raise ValueError(
            f"Column {image_column!r} holds {features[image_column]!r}; expected images (a `datasets.Image` feature)."
        )
    label_feature = features[label_column]
    is_int_label = isinstance(label_feature, datasets.Value) and label_feature.dtype.startswith(("int", "uint"))
    if not isinstance(label_feature, datasets.ClassLabel) and not is_int_label:
        raise ValueError(
            f"Column {label_column!r} holds {label_feature!r}; expected class ids (a `ClassLabel` or integer feature)."
        )
    if caption_column and not (
        isinstance(features[caption_column], datasets.Value)
        and features[caption_column].dtype in ("string", "large_string")
    ):
        raise ValueError(f"Column {caption_column!r} holds {features[caption_column]!r}; expected strings.")
    if max_train_samples is not None:
        if max_train_samples < 1:
            raise ValueError(f"--max_train_samples is {max_train_samples}; expected a positive number.")
        dataset = dataset.select(range(min(max_train_samples, len(dataset))))
    if len(dataset) == 0:
        raise ValueError("The training split is empty; expected at least one example.")

    labels = torch.tensor(dataset[label_column], dtype=torch.long)
    if (labels < 0).any():
        raise ValueError(f"Column {label_column!r} has negative class ids {labels[labels < 0].unique().tolist()}.")
    if isinstance(label_feature, datasets.ClassLabel):
        label_names = list(label_feature.names)
    else:
        label_names = [str(i) for i in range(int(labels.max()) + 1)]
    captions = list(dataset[caption_column]) if caption_column else None
    return ImageClassData(
        images=decode_images(dataset, image_column, resolution),
        labels=labels,
        label_names=label_names,
        captions=captions,
    )


class ImageClassDataset(torch.utils.data.Dataset):
    r"""
    [`ImageClassData`] as a map-style dataset of `{"pixel_values", "labels", "indices"}`.

    `pixel_values` are float `(1, H, W)` in [-1, 1]; `indices` lets the training loop look up per-image captions and
    style words.
    """

    def __init__(self, data: ImageClassData):
        self.data = data

    def __len__(self) -> int:
        return len(self.data.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {
            "pixel_values": self.data.images[index].float() / 127.5 - 1.0,
            "labels": self.data.labels[index],
            "indices": torch.tensor(index),
        }


class EpochShuffleSampler(torch.utils.data.Sampler[int]):
    r"""
    A random permutation per epoch, drawn from `seed + epoch`: the order depends only on the seed and the epoch.

    `accelerate`'s data loader calls `set_epoch` at the start of each pass, so a resumed run (which sets the epoch
    and skips the batches already seen) reads exactly the batches the uninterrupted run would have read.
    """

    def __init__(self, num_samples: int, seed: int = 0):
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())
