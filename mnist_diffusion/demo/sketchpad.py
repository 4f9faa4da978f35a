"""The demo's sketchpads, which refuse an upload of too many pixels before decoding it."""

from __future__ import annotations

import io
import os
import warnings
from typing import Any

import gradio as gr
from gradio.data_classes import FileData
from PIL import Image

from .handlers import refusal

#: Largest drawing the demo takes, in pixels (a 2048x2048 image): a bigger upload is refused before it is decoded.
MAX_DRAWING_SIDE = 2048
MAX_DRAWING_PIXELS = MAX_DRAWING_SIDE * MAX_DRAWING_SIDE


def check_drawing_size(source: str | os.PathLike | bytes) -> None:
    r"""
    Refuse (`gr.Error`) an image file or its bytes holding more than `MAX_DRAWING_PIXELS`, or no image; only its
    header is read, so a small file of a huge image costs no memory.

    Example:

    ```py
    >>> from mnist_diffusion.demo.sketchpad import check_drawing_size

    >>> check_drawing_size("huge.png")  # doctest: +SKIP
    gradio.exceptions.Error: 'The drawing is 12000x12000 pixels; the demo takes at most 4,194,304 pixels ...'
    ```
    """
    side = MAX_DRAWING_SIDE
    limit = f"the demo takes at most {MAX_DRAWING_PIXELS:,} pixels ({side}x{side}): scale it down"
    try:
        with warnings.catch_warnings():  # Pillow warns about big images when opening them; the size is checked here
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
                width, height = image.size
    except Image.DecompressionBombError:
        raise refusal(f"The drawing is far too large; {limit} first.") from None
    except OSError as error:  # not an image Pillow can read (UnidentifiedImageError), or a truncated header
        raise refusal(f"The drawing is not an image the demo can read ({error}).") from None
    if width * height > MAX_DRAWING_PIXELS:
        raise refusal(f"The drawing is {width}x{height} pixels; {limit} first.")


def sketchpad(label: str, elem_id: str) -> gr.Sketchpad:
    r"""
    A 280x280 black sketchpad with a white brush, as MNIST digits look (dark-on-light drawings work too).

    Each image it receives (background, layers, composite: drawn, uploaded or sent through the API) is checked with
    [`check_drawing_size`] before Gradio decodes it, so that one upload of a huge image cannot take the server's
    memory. (The check wraps this instance's `convert_and_format_image`: a subclass of a Gradio component would make
    Gradio write a `.pyi` stub beside this file.)
    """
    pad = gr.Sketchpad(
        value=Image.new("RGB", (280, 280)),
        label=label,
        canvas_size=(280, 280),
        fixed_canvas=True,
        brush=gr.Brush(default_size=20, colors=["#ffffff"], color_mode="fixed"),
        format="png",
        elem_id=elem_id,
    )
    decode = pad.convert_and_format_image

    def checked_decode(file: FileData | bytes | None, flatten_on_white: bool = False) -> Any:
        if file is not None:
            check_drawing_size(file.path if isinstance(file, FileData) else bytes(file))
        return decode(file, flatten_on_white)

    pad.convert_and_format_image = checked_decode
    return pad
