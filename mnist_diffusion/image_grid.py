"""`image_grid`: paste same-size images into one grid image, keeping their mode (grayscale digits stay "L")."""

from __future__ import annotations

from PIL import Image


def image_grid(images: list[Image.Image], rows: int, cols: int) -> Image.Image:
    r"""
    Paste up to `rows * cols` same-size images into a grid, row by row; cells left over stay black.

    Example:

    ```py
    >>> from PIL import Image
    >>> from mnist_diffusion.image_grid import image_grid

    >>> image_grid([Image.new("L", (28, 28), 255)] * 5, rows=2, cols=3).size
    (84, 56)
    ```
    """
    if not images or len(images) > rows * cols:
        raise ValueError(f"Got {len(images)} images for a {rows}x{cols} grid; expected 1 to {rows * cols}.")
    width, height = images[0].size
    grid = Image.new(images[0].mode, (cols * width, rows * height))
    for i, image in enumerate(images):
        grid.paste(image, ((i % cols) * width, (i // cols) * height))
    return grid
