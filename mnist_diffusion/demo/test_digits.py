"""Real MNIST test digits shipped with the package for the demo's forward-process tab, and how they were made."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..data import decode_images, load_split

#: Two real digits of each class from the MNIST test split: `images` uint8 `(20, 28, 28)`, `labels` int64 `(20,)`.
TEST_DIGITS_FILE = Path(__file__).parent / "test_digits.safetensors"


def load_test_digits(path: str | Path = TEST_DIGITS_FILE) -> tuple[torch.Tensor, torch.Tensor]:
    r"""
    The shipped test digits as images in [-1, 1] `(n, 1, 28, 28)` (the pipeline's range) and their class ids `(n,)`.

    Example:

    ```py
    >>> from mnist_diffusion.demo.test_digits import load_test_digits

    >>> images, labels = load_test_digits()
    >>> images.shape, labels[:10].tolist()
    (torch.Size([20, 1, 28, 28]), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    ```
    """
    tensors = load_file(str(path))
    images = tensors["images"].unsqueeze(1).float() / 127.5 - 1
    return images, tensors["labels"]


def build_test_digits(data_dir: str, per_class: int = 2, output: str | Path = TEST_DIGITS_FILE) -> Path:
    r"""
    Write the first `per_class` test-split images of each class of the MNIST dataset `data_dir` (a Hub id or a local
    folder) to `output`, ordered 0..9, then 0..9 again; the source row indices go into the file's metadata.

    Example:

    ```py
    >>> from mnist_diffusion.demo.test_digits import build_test_digits

    >>> build_test_digits("/work/shared/data/mnist")  # doctest: +SKIP
    ```
    """
    if per_class < 1:
        raise ValueError(f"per_class is {per_class}; expected at least 1.")
    test = load_split(data_dir, split="test")
    labels = torch.tensor(test["label"])
    num_classes = int(labels.max()) + 1
    rows = [torch.nonzero(labels == c).flatten()[:per_class] for c in range(num_classes)]
    if any(len(r) < per_class for r in rows):
        raise ValueError(f"{data_dir!r} has fewer than {per_class} test images of some class.")
    indices = torch.stack(rows, dim=1).flatten().tolist()  # 0..9, 0..9, ...
    subset = test.select(indices)
    images = decode_images(subset, "image", 28).squeeze(1).contiguous()
    output = Path(output)
    save_file(
        {"images": images, "labels": labels[indices].contiguous()},
        str(output),
        metadata={"source": f"{data_dir} test split", "rows": ",".join(map(str, indices))},
    )
    return output


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Rebuild the demo's shipped test digits from an MNIST dataset.")
    parser.add_argument("data_dir", help="MNIST as a Hub id or local folder, e.g. /work/shared/data/mnist.")
    parser.add_argument("--per_class", type=int, default=2)
    args = parser.parse_args()
    print(f"Wrote {build_test_digits(args.data_dir, args.per_class)}")
