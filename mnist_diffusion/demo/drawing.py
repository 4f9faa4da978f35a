"""Turn a sketchpad drawing into an MNIST-style digit: white ink on black, fitted in 20x20 and centred in 28x28."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

#: Ink below this share of the strongest stroke counts as paper.
INK_THRESHOLD = 0.1
#: A drawing with fewer inked pixels than this share of the canvas is treated as blank.
MIN_INK_SHARE = 0.001


def ink_map(drawing: Any) -> np.ndarray:
    r"""
    How much ink each pixel of a drawing holds, in [0, 1] `(height, width)`.

    `drawing` is what a Gradio sketchpad gives (a dict whose `"composite"` is the flattened picture) or an image
    (numpy array or PIL). On a transparent canvas the ink is the strokes' opacity, whatever their colour; on an opaque
    one it is the distance from the paper's grey level (the most common one), so dark-on-white and white-on-black
    drawings both work.
    """
    if isinstance(drawing, dict):
        drawing = drawing.get("composite")
    if drawing is None:
        return np.zeros((1, 1))
    array = np.asarray(drawing.convert("RGBA") if isinstance(drawing, Image.Image) else drawing, dtype=np.float64)
    if array.ndim == 2:
        array = array[..., None]
    if array.max() > 1:
        array = array / 255
    alpha = array[..., 3] if array.shape[2] == 4 else np.ones(array.shape[:2])
    gray = array[..., :3].mean(axis=2) if array.shape[2] >= 3 else array[..., 0]
    if (alpha < 1).any():
        return alpha
    paper = np.median(gray)
    return np.abs(gray - paper)


def sketch_to_digit(drawing: Any, size: int = 28, box: int = 20) -> torch.Tensor | None:
    r"""
    A drawing as a digit the models know: `(1, 1, size, size)` in [-1, 1] (white ink on black), the ink's bounding
    box scaled to fit `box x box` pixels and its centre of mass moved to the centre, as MNIST was made; `None` when the
    drawing is blank.

    Example:

    ```py
    >>> import numpy as np
    >>> from mnist_diffusion.demo.drawing import sketch_to_digit

    >>> canvas = np.zeros((280, 280, 4), dtype=np.uint8)
    >>> canvas[40:240, 130:150] = 255  # a white vertical stroke: a "1"
    >>> sketch_to_digit({"composite": canvas}).shape
    torch.Size([1, 1, 28, 28])
    >>> sketch_to_digit({"composite": np.zeros((280, 280, 4), dtype=np.uint8)}) is None
    True
    ```
    """
    ink = ink_map(drawing)
    strongest = ink.max()
    inked = ink > INK_THRESHOLD * strongest
    if strongest == 0 or inked.mean() < MIN_INK_SHARE:
        return None
    rows, cols = np.nonzero(inked)
    crop = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] / strongest
    scale = box / max(crop.shape)
    height, width = max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale))
    small = Image.fromarray(np.uint8(crop * 255)).resize((width, height), Image.Resampling.LANCZOS)
    small = np.asarray(small, dtype=np.float64) / 255
    mass = small.sum()
    centre_row = (small.sum(axis=1) * np.arange(height)).sum() / mass
    centre_col = (small.sum(axis=0) * np.arange(width)).sum() / mass
    top = int(np.clip(round(size / 2 - 0.5 - centre_row), 0, size - height))
    left = int(np.clip(round(size / 2 - 0.5 - centre_col), 0, size - width))
    digit = np.zeros((size, size))
    digit[top : top + height, left : left + width] = small
    return torch.from_numpy(digit).float().reshape(1, 1, size, size) * 2 - 1
