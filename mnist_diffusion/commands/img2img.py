"""`mnist-diffusion img2img`: redraw an image (a rough sketch, a damaged digit) towards a prompt and/or a class."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING

from ..loading import SCHEDULERS, open_pipeline, parse_class_label
from .arguments import check_image_output, finite_float

if TYPE_CHECKING:
    import PIL.Image


#: Most results of one `img2img` or `inpaint` run (they are computed as one batch).
MAX_IMAGES = 1000
#: Largest `--seed`: torch generators take unsigned 64-bit seeds.
MAX_SEED = 2**64 - 1


def checked_output(path: str, overwrite: bool) -> Path:
    """
    The `-o` path, checked before any compute (`check_image_output` proves its folder writable); an existing file is
    refused unless `--overwrite` is given.
    """
    output = check_image_output("-o/--output", path)
    if output.exists() and not overwrite:
        raise ValueError(f"-o/--output {path!r} exists; pass --overwrite to replace it.")
    return output


def save_images(images: list[PIL.Image.Image], output: Path) -> Path:
    """Save one image, or a square-ish grid of several, to `output` (its folder created)."""
    from ..image_grid import image_grid

    cols = math.ceil(math.sqrt(len(images)))
    grid = image_grid(images, rows=math.ceil(len(images) / cols), cols=cols)
    output.parent.mkdir(parents=True, exist_ok=True)
    grid.save(output)
    print(f"Saved {len(images)} image{'s' if len(images) > 1 else ''} to {output}")
    return output


def image_call_kwargs(args: argparse.Namespace) -> dict:
    """The pipeline arguments the image commands share, from their flags."""
    import torch

    if not 1 <= args.num_images <= MAX_IMAGES:
        raise ValueError(
            f"-n/--num-images is {args.num_images}; expected 1 to {MAX_IMAGES} (computed as one batch; run again with "
            "another --seed for more)."
        )
    if not 0 <= args.seed <= MAX_SEED:
        raise ValueError(f"--seed is {args.seed}; expected an integer in 0..{MAX_SEED}.")
    return {
        "prompt": args.prompt,
        "class_labels": parse_class_label(args.class_label),
        "num_inference_steps": args.steps,
        "guidance_scale": args.guidance_scale,
        "num_images_per_prompt": args.num_images,
        "invert": args.invert,
        "generator": torch.Generator().manual_seed(args.seed),
    }


def img2img(args: argparse.Namespace) -> Path:
    """Redraw `args.image` with strength `args.strength` and save the result(s)."""
    from ..image_input import load_image_file
    from ..pipelines import MnistImg2ImgPipeline

    output = checked_output(args.output, args.overwrite)
    image = load_image_file(args.image, "image")
    kwargs = image_call_kwargs(args)
    pipe = MnistImg2ImgPipeline.from_pipe(open_pipeline(args.model, args.scheduler))
    return save_images(pipe(image=image, strength=args.strength, **kwargs).images, output)


def add_image_arguments(parser: argparse.ArgumentParser, default_output: str) -> None:
    """Flags of the commands that start from an image: model, conditioning, sampling, input polarity, output."""
    parser.add_argument(
        "--model", help="A saved pipeline: local folder or Hub repo id (default: the released model, shipped offline)."
    )
    parser.add_argument("--class-label", help='A class id or name ("7", "Sneaker").')
    parser.add_argument(
        "-n", "--num-images", type=int, default=1, help=f"Results, saved as a grid, at most {MAX_IMAGES} (default 1)."
    )
    parser.add_argument("--steps", type=int, default=50, help="Denoising steps (default 50).")
    parser.add_argument(
        "--guidance-scale", type=finite_float, default=3.0, help="Classifier-free guidance (default 3.0)."
    )
    parser.add_argument("--scheduler", choices=sorted(SCHEDULERS), help="Swap the pipeline's scheduler.")
    parser.add_argument("--seed", type=int, default=0, help="Random seed (default 0).")
    parser.add_argument(
        "--invert",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="--invert: the image is dark ink on light paper; --no-invert: white on black like MNIST "
        "(default: detected from the image's border).",
    )
    parser.add_argument("-o", "--output", default=default_output, help=f"Output image (default {default_output}).")
    parser.add_argument("--overwrite", action="store_true", help="Replace the output file if it exists.")


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `img2img` subcommand to the `mnist-diffusion` parser."""
    parser = commands.add_parser(
        "img2img", help="Redraw an image (a sketch, a damaged digit) towards a prompt and/or a class label."
    )
    parser.add_argument(
        "image", help="The starting image file: any size, gray or color, dark on light or light on dark."
    )
    parser.add_argument("prompt", nargs="?", help='What it should become, e.g. "a thick 7".')
    parser.add_argument(
        "--strength",
        type=finite_float,
        default=0.6,
        help="In (0, 1]: how much to change the image; low keeps its strokes, 1.0 ignores it (default 0.6).",
    )
    add_image_arguments(parser, "img2img.png")
    parser.set_defaults(func=img2img)
