"""Turn images and masks as users have them (PIL, numpy, torch, files; any size, RGB or gray, dark or light ink)."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

ImageInput = PIL.Image.Image | np.ndarray | torch.Tensor | str | os.PathLike | Sequence
# a border brighter than this (in [0, 1]) means dark ink on light paper
PAPER_THRESHOLD = 0.5
#: Most pixels (height x width, summed over a batch) an image input may have: it is checked before decoding, so a
#: small file that decodes to a huge image (a decompression bomb) is refused without allocating it.
MAX_IMAGE_PIXELS = 4096 * 4096
# PIL modes of 16-bit (and 32-bit integer) gray images, read as 0..65535 instead of being clipped to 8 bits
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# what PIL raises on a file it cannot identify or decode
DECODE_ERRORS = (PIL.UnidentifiedImageError, OSError, SyntaxError, ValueError)


def check_pixels(argument: str, height: int, width: int, batch: int = 1) -> None:
    """Refuse (`ValueError`) an image input with no pixels or more than `MAX_IMAGE_PIXELS`, before decoding it."""
    if height < 1 or width < 1 or batch < 1:
        images = f", {batch} images" if batch != 1 else ""
        raise ValueError(f"{argument} is empty ({width}x{height} pixels{images}); expected at least one pixel.")
    if batch * height * width > MAX_IMAGE_PIXELS:
        images = f"{batch} images of " if batch > 1 else ""
        raise ValueError(
            f"{argument} has {images}{width}x{height} pixels; expected at most {MAX_IMAGE_PIXELS} pixels in all "
            f"(e.g. {math.isqrt(MAX_IMAGE_PIXELS)}x{math.isqrt(MAX_IMAGE_PIXELS)}): shrink it first."
        )


def load_image_file(path: str | os.PathLike, argument: str = "image") -> PIL.Image.Image:
    """Open an image file, with a `ValueError` naming `argument` when it is missing, too large or does not decode."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{argument} {str(path)!r} is not a file; expected an image file (PNG, JPEG, ...).")
    try:
        with warnings.catch_warnings():  # PIL warns of large images; their size is checked below, before decoding
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            image = PIL.Image.open(path)
    except PIL.Image.DecompressionBombError as error:
        raise ValueError(
            f"{argument} {str(path)!r} is too large to decode ({error}); expected at most {MAX_IMAGE_PIXELS} pixels."
        ) from None
    except DECODE_ERRORS as error:
        raise ValueError(f"{argument} {str(path)!r} is not a readable image file ({error}).") from None
    with image:
        check_pixels(f"{argument} {str(path)!r}", image.height, image.width)
        try:
            image.load()
        except DECODE_ERRORS as error:
            raise ValueError(f"{argument} {str(path)!r} is not a readable image file ({error}).") from None
        return image.copy()


def load_images(image: ImageInput, argument: str) -> torch.Tensor:
    r"""
    One image or a batch as float `(batch, channels, height, width)` in [0, 1] at its own size: 1 channel, or 2 with
    an alpha channel (RGB is converted to luma). See [`prepare_image`] for what is accepted; the pixel count is
    checked against `MAX_IMAGE_PIXELS` before anything is decoded or converted.
    """
    if isinstance(image, (str, os.PathLike)):
        image = load_image_file(image, argument)
    if isinstance(image, PIL.Image.Image):
        check_pixels(f"`{argument}`", image.height, image.width)
        if image.mode in SIXTEEN_BIT_MODES:  # PIL's convert("L") would clip 0..65535 at 255
            return load_images(np.asarray(image, dtype=np.float32) / 65535, argument)
        if image.mode == "F":  # float pixels, read as a float numpy array: [0, 1]
            return load_images(np.asarray(image, dtype=np.float32), argument)
        mode = "LA" if image.mode in ("LA", "RGBA", "PA") or "transparency" in image.info else "L"
        return (
            torch.from_numpy(np.asarray(image.convert(mode), dtype=np.float32) / 255)
            .reshape(1, image.height, image.width, len(mode))
            .permute(0, 3, 1, 2)
        )
    if isinstance(image, (list, tuple)):
        if not image:
            raise ValueError(f"`{argument}` is an empty list; expected at least one image.")
        parts = []
        for item in image:
            parts.append(load_images(item, argument))
            check_pixels(f"`{argument}`", *parts[-1].shape[-2:], batch=sum(part.shape[0] for part in parts))
        if len({part.shape[1:] for part in parts}) != 1:
            raise ValueError(f"The images of `{argument}` differ in size or channels; give same-size images.")
        return torch.cat(parts)
    if isinstance(image, np.ndarray):
        tensor = _from_numpy(image, argument)
    elif isinstance(image, torch.Tensor):
        tensor = _from_torch(image, argument)
    else:
        raise ValueError(
            f"`{argument}` has type {type(image).__name__}; expected a PIL image, a numpy array, a torch tensor, a "
            "file path, or a list of them."
        )
    if not torch.isfinite(tensor).all():
        raise ValueError(f"`{argument}` contains NaN or infinite values.")
    if tensor.min() < 0:  # diffusers' convention for tensors in [-1, 1]
        if tensor.min() < -1 - 1e-6 or tensor.max() > 1 + 1e-6:
            raise ValueError(f"`{argument}` has values in [{tensor.min():.3g}, {tensor.max():.3g}]; expected [0, 1].")
        tensor = tensor / 2 + 0.5
    elif tensor.max() > 1 + 1e-6:
        raise ValueError(
            f"`{argument}` has float values up to {tensor.max():.3g}; expected [0, 1] (or uint8 0..255, "
            "uint16 0..65535)."
        )
    if tensor.shape[1] == 4:  # RGBA -> gray + alpha
        tensor = torch.cat([_luminance(tensor[:, :3]), tensor[:, 3:]], dim=1)
    elif tensor.shape[1] == 3:
        tensor = _luminance(tensor)
    return tensor.clamp(0, 1)


def _from_numpy(array: np.ndarray, argument: str) -> torch.Tensor:
    """`(batch, channels, H, W)` floats from a channels-last numpy image or batch, integers scaled to [0, 1]."""
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating) or array.dtype == bool):
        raise ValueError(
            f"`{argument}` has dtype {array.dtype}; expected real pixel values (uint8 0..255, uint16 0..65535, "
            "floats in [0, 1] or bool)."
        )
    shape = array.shape
    if array.ndim == 2:
        array = array[None, :, :, None]
    elif array.ndim == 3 and shape[-1] in (1, 2, 3, 4):
        array = array[None]
    elif array.ndim != 4 or shape[-1] not in (1, 2, 3, 4):
        raise ValueError(
            f"`{argument}` has shape {shape}; expected a channels-last numpy image with 1 to 4 channels: (H, W), "
            "(H, W, C) or (B, H, W, C) (a batch of gray images is (B, H, W, 1))."
        )
    check_pixels(f"`{argument}`", array.shape[1], array.shape[2], batch=array.shape[0])
    scale = 65535 if array.dtype == np.uint16 else 255 if np.issubdtype(array.dtype, np.integer) else 1
    return torch.from_numpy(array.astype(np.float32) / scale).permute(0, 3, 1, 2)


def _from_torch(tensor: torch.Tensor, argument: str) -> torch.Tensor:
    """`(batch, channels, H, W)` floats from a channels-first torch image or batch, uint8 scaled to [0, 1]."""
    if tensor.is_complex():
        raise ValueError(f"`{argument}` has dtype {tensor.dtype}; expected real pixel values.")
    shape = tuple(tensor.shape)
    if tensor.ndim == 2:
        tensor = tensor[None, None]
    elif tensor.ndim == 3:
        tensor = tensor[None]
    if tensor.ndim != 4 or tensor.shape[1] not in (1, 2, 3, 4):
        raise ValueError(
            f"`{argument}` has shape {shape}; expected a channels-first torch image with 1 to 4 channels: (H, W), "
            "(C, H, W) or (B, C, H, W)."
        )
    check_pixels(f"`{argument}`", tensor.shape[2], tensor.shape[3], batch=tensor.shape[0])
    return tensor.detach().cpu().float() / (255 if tensor.dtype == torch.uint8 else 1)


def _luminance(rgb: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma of `(batch, 3, H, W)` RGB, as PIL's `convert("L")`."""
    weights = torch.tensor([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1)
    return (rgb * weights).sum(dim=1, keepdim=True)


def _flatten_alpha(gray_alpha: torch.Tensor) -> torch.Tensor:
    """Gray + alpha to gray: transparent pixels become the background that the opaque ink is not."""
    gray, alpha = gray_alpha[:, :1], gray_alpha[:, 1:]
    ink = (gray * alpha).sum(dim=(1, 2, 3), keepdim=True) / alpha.sum(dim=(1, 2, 3), keepdim=True).clamp(min=1e-6)
    background = (ink < 0.5).float()  # dark strokes on a transparent sheet: light paper behind them
    return gray * alpha + background * (1 - alpha)


def resize(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize `(batch, channels, H, W)`: area averages to shrink (thin strokes survive), bilinear to grow."""
    if tuple(images.shape[-2:]) == (height, width):
        return images
    if images.shape[-2] >= height and images.shape[-1] >= width:
        return F.interpolate(images, size=(height, width), mode="area")
    return F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False).clamp(0, 1)


def is_dark_on_light(images: torch.Tensor) -> torch.Tensor:
    r"""
    Per image of `(batch, 1, H, W)` in [0, 1]: whether it is dark ink on light paper (its border is mostly light).

    MNIST digits are white on black, so their border is dark; a sketch or a photo of paper has a light border.

    Example:

    ```py
    >>> import torch
    >>> from mnist_diffusion.image_input import is_dark_on_light

    >>> is_dark_on_light(torch.stack([torch.zeros(1, 28, 28), torch.ones(1, 28, 28)])).tolist()
    [False, True]
    ```
    """
    border = torch.cat([images[:, :, 0], images[:, :, -1], images[:, :, :, 0], images[:, :, :, -1]], dim=-1).flatten(1)
    return border.median(dim=1).values > PAPER_THRESHOLD


def prepare_image(
    image: ImageInput, height: int, width: int, invert: bool | None = None, argument: str = "image"
) -> torch.Tensor:
    r"""
    Images in the model's convention: `(batch, 1, height, width)` in [-1, 1], white ink on black like MNIST.

    Args:
        image: A PIL image, numpy array (`uint8` 0..255 or floats in [0, 1], channels last), torch tensor (channels
            first, [0, 1] or [-1, 1]), a file path, or a list of them; gray, RGB or with alpha; any size (resized:
            area averages to shrink, bilinear to grow).
        height, width (`int`): The model's resolution.
        invert (`bool`, *optional*): `True` for dark ink on light paper, `False` for MNIST's light ink on black;
            by default detected per image from its border ([`is_dark_on_light`]).
        argument (`str`): The argument name used in error messages.

    Example:

    ```py
    >>> from PIL import Image, ImageDraw
    >>> from mnist_diffusion.image_input import prepare_image

    >>> sketch = Image.new("RGB", (200, 200), "white")
    >>> ImageDraw.Draw(sketch).line([(60, 40), (140, 40), (90, 170)], fill="black", width=14)
    >>> x = prepare_image(sketch, 28, 28)  # resized, grayscale, inverted to white on black
    >>> x.shape, float(x[0, 0, 0, 0])
    (torch.Size([1, 1, 28, 28]), -1.0)
    ```
    """
    tensor = load_images(image, argument)
    if tensor.shape[1] == 2:
        tensor = _flatten_alpha(tensor)
    tensor = resize(tensor, height, width)
    if invert is None:
        flip = is_dark_on_light(tensor)
    else:
        flip = torch.full((tensor.shape[0],), bool(invert))
    tensor = torch.where(flip.reshape(-1, 1, 1, 1), 1 - tensor, tensor)
    return tensor * 2 - 1


def prepare_mask(mask_image: ImageInput, height: int, width: int, argument: str = "mask_image") -> torch.Tensor:
    r"""
    A repaint mask `(batch, 1, height, width)` of 0.0 (keep) and 1.0 (repaint): white (> 0.5) means repaint.

    Accepts what [`prepare_image`] accepts (never inverted); resized to the model's resolution, then binarised.
    """
    tensor = load_images(mask_image, argument)
    if tensor.shape[1] == 2:
        tensor = tensor[:, :1] * tensor[:, 1:]  # transparent = keep
    return (resize(tensor, height, width) > 0.5).float()
