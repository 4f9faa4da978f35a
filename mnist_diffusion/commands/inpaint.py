"""`mnist-diffusion inpaint`: repaint the masked part of an image (white in the mask), keeping the rest."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..loading import open_pipeline
from .img2img import add_image_arguments, checked_output, image_call_kwargs, save_images


def inpaint(args: argparse.Namespace) -> Path:
    """Complete `args.image` where `args.mask` is white and save the result(s)."""
    from ..image_input import load_image_file
    from ..pipelines import MnistInpaintPipeline
    from ..pipelines.pipeline_mnist_inpaint import MAX_JUMP_N_SAMPLE

    if not 1 <= args.jump_n_sample <= MAX_JUMP_N_SAMPLE:
        raise ValueError(f"--jump-n-sample is {args.jump_n_sample}; expected 1 to {MAX_JUMP_N_SAMPLE}.")
    output = checked_output(args.output, args.overwrite)
    image = load_image_file(args.image, "image")
    mask = load_image_file(args.mask, "mask")
    kwargs = image_call_kwargs(args)
    pipe = MnistInpaintPipeline.from_pipe(open_pipeline(args.model, args.scheduler))
    images = pipe(
        image=image, mask_image=mask, jump_length=args.jump_length, jump_n_sample=args.jump_n_sample, **kwargs
    ).images
    return save_images(images, output)


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `inpaint` subcommand to the `mnist-diffusion` parser."""
    parser = commands.add_parser(
        "inpaint", help="Repaint the white part of a mask in an image (finish a half-covered digit)."
    )
    parser.add_argument("image", help="The image to complete (any size, gray or color).")
    parser.add_argument("mask", help="A mask of the image's size: white = repaint, black = keep.")
    parser.add_argument("prompt", nargs="?", help='What the completed image should be, e.g. "an 8".')
    parser.add_argument(
        "--jump-length", type=int, default=5, help="RePaint resampling: steps per jump back (default 5)."
    )
    parser.add_argument(
        "--jump-n-sample",
        type=int,
        default=2,
        help="RePaint resampling: times each stretch is denoised; 1 turns resampling off (default 2).",
    )
    add_image_arguments(parser, "inpaint.png")
    parser.set_defaults(func=inpaint)
