"""Tests of dataset loading (parquet, save_to_disk, image folder), tensor preparation and the IDX converter."""

from __future__ import annotations

import gzip
import struct

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from mnist_diffusion.data import EpochShuffleSampler, ImageClassDataset, load_split, prepare_training_data
from mnist_diffusion.idx_conversion import LABEL_NAMES, convert_idx_folder, main, read_idx


def make_dataset(num_samples: int = 12, size: int = 28) -> datasets.Dataset:
    images = [Image.fromarray(np.full((size, size), 20 * i, dtype=np.uint8), mode="L") for i in range(num_samples)]
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=["Sneaker", "Bag", "Coat"]),
            "text": datasets.Value("string"),
        }
    )
    return datasets.Dataset.from_dict(
        {"image": images, "label": [i % 3 for i in range(num_samples)], "text": [f"c{i}" for i in range(num_samples)]},
        features=features,
    )


def test_parquet_hub_layout_save_to_disk_and_image_folder_load_the_same_split(tmp_path):
    dataset = make_dataset()
    (tmp_path / "parquet").mkdir()
    dataset.to_parquet(str(tmp_path / "parquet" / "train-00000-of-00001.parquet"))
    datasets.DatasetDict({"train": dataset}).save_to_disk(str(tmp_path / "saved"))
    for i, example in enumerate(dataset):
        folder = tmp_path / "images" / "train" / dataset.features["label"].int2str(example["label"])
        folder.mkdir(parents=True, exist_ok=True)
        example["image"].save(folder / f"{i}.png")

    for name in ("parquet", "saved"):
        split = load_split(str(tmp_path / name))
        assert len(split) == 12 and split.features["label"].names == ["Sneaker", "Bag", "Coat"]
    image_folder = load_split(str(tmp_path / "images"))
    assert len(image_folder) == 12 and sorted(image_folder.features["label"].names) == ["Bag", "Coat", "Sneaker"]
    with pytest.raises(ValueError, match="Split 'test' not found"):
        load_split(str(tmp_path / "saved"), split="test")


def test_prepare_training_data_decodes_once_to_uint8_and_resizes_only_when_asked():
    data = prepare_training_data(make_dataset(), caption_column="text", max_train_samples=5)
    assert data.images.dtype == torch.uint8 and data.images.shape == (5, 1, 28, 28)
    assert data.images[3].unique().tolist() == [60]
    assert data.labels.tolist() == [0, 1, 2, 0, 1]
    assert data.id2label == {"0": "Sneaker", "1": "Bag", "2": "Coat"}
    assert data.captions == ["c0", "c1", "c2", "c3", "c4"]
    assert prepare_training_data(make_dataset(), resolution=8).images.shape == (12, 1, 8, 8)

    item = ImageClassDataset(data)[3]
    assert item["pixel_values"].shape == (1, 28, 28)
    torch.testing.assert_close(item["pixel_values"], torch.full((1, 28, 28), 60 / 127.5 - 1))
    assert item["labels"].item() == 0 and item["indices"].item() == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"image_column": "picture"}, "--image_column 'picture' is not a column"),
        ({"label_column": "text"}, "expected class ids"),
        ({"image_column": "text"}, "expected images"),
        ({"caption_column": "label"}, "expected strings"),
        ({"max_train_samples": 0}, "--max_train_samples is 0"),
    ],
)
def test_prepare_training_data_rejects_bad_columns(kwargs, message):
    with pytest.raises(ValueError, match=message):
        prepare_training_data(make_dataset(), **kwargs)


def test_integer_labels_get_their_ids_as_names():
    dataset = make_dataset().cast_column("label", datasets.Value("int64"))
    assert prepare_training_data(dataset).label_names == ["0", "1", "2"]


def test_epoch_shuffle_sampler_depends_only_on_seed_and_epoch():
    sampler = EpochShuffleSampler(10, seed=3)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(first) == list(range(10)) and first != second
    again = EpochShuffleSampler(10, seed=3)
    again.set_epoch(1)
    assert list(again) == second


def write_idx(path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_idx_files_convert_to_a_dataset_the_trainer_loads(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (6, 28, 28)), np.array([0, 1, 2, 3, 9, 7])
    write_idx(raw / "train-images-idx3-ubyte.gz", images)
    write_idx(raw / "train-labels-idx1-ubyte.gz", labels)
    write_idx(raw / "t10k-images-idx3-ubyte.gz", images[:2])
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", labels[:2])
    np.testing.assert_array_equal(read_idx(str(raw / "train-images-idx3-ubyte.gz")), images)

    main([str(raw), str(tmp_path / "mnist")])
    train = load_split(str(tmp_path / "mnist"))
    assert len(load_split(str(tmp_path / "mnist"), split="test")) == 2
    data = prepare_training_data(train)
    np.testing.assert_array_equal(data.images[:, 0].numpy(), images)
    assert data.labels.tolist() == labels.tolist() and data.label_names == LABEL_NAMES["mnist"]

    with pytest.raises(ValueError, match="is not empty"):
        convert_idx_folder(str(raw), str(tmp_path / "mnist"), LABEL_NAMES["mnist"])
    (raw / "bad-idx").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="is not an IDX file"):
        read_idx(str(raw / "bad-idx"))
