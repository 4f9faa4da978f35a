"""Convert the classic IDX files (`train-images-idx3-ubyte.gz`, ...) into a `datasets` dataset saved on disk."""

from __future__ import annotations

import argparse
import gzip
import os

import datasets
import numpy as np

#: Label names of the two classic datasets stored in IDX files.
LABEL_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "fashion_mnist": [
        "T - shirt / top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ],
}  # fmt: skip

#: IDX file stems of each split, as in LeCun's and Zalando's distributions (torchvision keeps the same names).
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str) -> np.ndarray:
    r"""
    Read an IDX file (optionally gzip-compressed, as `*-ubyte.gz`) into a numpy array of its stored shape.

    Example:

    ```py
    >>> from mnist_diffusion.idx_conversion import read_idx

    >>> read_idx("raw/train-images-idx3-ubyte.gz").shape
    (60000, 28, 28)
    ```
    """
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path!r} is not an IDX file (bad magic number {data[:4].hex()!r}).")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - offset != expected:
        raise ValueError(f"{path!r} holds {len(data) - offset} bytes of data; its header {shape} expects {expected}.")
    return np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape)


def idx_to_dataset(images_path: str, labels_path: str, label_names: list[str]) -> datasets.Dataset:
    r"""A `Dataset` with an `image` (`datasets.Image`) and a `label` (`ClassLabel(names=label_names)`) column."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"Expected images (N, H, W) and labels (N,), got {images.shape} from {images_path!r} and {labels.shape} "
            f"from {labels_path!r}."
        )
    if labels.max(initial=0) >= len(label_names):
        raise ValueError(f"Labels go up to {labels.max()}, but only {len(label_names)} label names were given.")
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=label_names)})
    return datasets.Dataset.from_dict(
        {"image": list(images.astype(np.uint8)), "label": labels.astype(np.int64).tolist()}, features=features
    )


def find_idx_file(folder: str, stem: str) -> str:
    """The path of `stem` (or `stem.gz`) in `folder`; the dotted `train-images.idx3-ubyte` spelling is accepted."""
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    raise ValueError(f"No IDX file {stem!r} (or {stem}.gz) in {folder!r}.")


def convert_idx_folder(input_dir: str, output_dir: str, label_names: list[str]) -> datasets.DatasetDict:
    r"""
    Convert a folder of IDX files into a `DatasetDict` (`train` and, when its files are there, `test`) saved with
    `save_to_disk` in `output_dir`, ready for `training/train.py --dataset_name output_dir`.

    Example:

    ```py
    >>> from mnist_diffusion.idx_conversion import LABEL_NAMES, convert_idx_folder

    >>> convert_idx_folder("~/.torchvision/MNIST/raw", "data/mnist-local", LABEL_NAMES["mnist"])
    DatasetDict({train: ..., test: ...})
    ```
    """
    input_dir = os.path.expanduser(input_dir)
    if os.path.exists(output_dir) and os.listdir(output_dir):
        raise ValueError(f"Output folder {output_dir!r} is not empty; expected a new or empty folder.")
    splits = {}
    for split, (images_stem, labels_stem) in SPLIT_FILES.items():
        if split == "test" and not any(name.startswith("t10k") for name in os.listdir(input_dir)):
            continue
        splits[split] = idx_to_dataset(
            find_idx_file(input_dir, images_stem), find_idx_file(input_dir, labels_stem), label_names
        )
    dataset = datasets.DatasetDict(splits)
    dataset.save_to_disk(output_dir)
    return dataset


def main(argv: list[str] | None = None) -> None:
    """`python -m mnist_diffusion.idx_conversion INPUT_DIR OUTPUT_DIR [--label_names mnist|fashion_mnist|a,b,...]`."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("input_dir", help="Folder holding train-images-idx3-ubyte(.gz), train-labels-... files.")
    parser.add_argument("output_dir", help="New folder for the dataset (written with `save_to_disk`).")
    parser.add_argument(
        "--label_names",
        default="mnist",
        help="'mnist', 'fashion_mnist', or the class names separated by commas.",
    )
    args = parser.parse_args(argv)
    names = LABEL_NAMES.get(args.label_names) or [name.strip() for name in args.label_names.split(",")]
    print(convert_idx_folder(args.input_dir, args.output_dir, names))


if __name__ == "__main__":
    main()
