"""`mnist-diffusion generate`: sample a grid of images from a saved pipeline with a prompt and/or a class label."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from ..image_grid import image_grid
from .loading import SCHEDULERS, open_pipeline


def generate(args: argparse.Namespace) -> Path:
    """Generate `args.num_images` images per prompt or label and save them as one grid image."""
    if args.prompt is None and args.class_label is None:
        raise ValueError("Give a prompt, --class-label, or both.")
    if args.num_images < 1:
        raise ValueError(f"-n/--num-images is {args.num_images}; expected at least 1.")
    pipe = open_pipeline(args.model, args.scheduler)
    class_label = int(args.class_label) if args.class_label and args.class_label.isdigit() else args.class_label
    images = pipe(
        prompt=args.prompt,
        class_labels=class_label,
        num_images_per_prompt=args.num_images,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
        generator=torch.Generator().manual_seed(args.seed),
    ).images
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    grid = image_grid(images, rows=rows, cols=cols)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    grid.save(output)
    print(f"Saved {len(images)} images to {output}")
    return output


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `generate` subcommand to the `mnist-diffusion` parser."""
    gen = commands.add_parser("generate", help="Generate a grid of images from a prompt and/or a class label.")
    gen.add_argument("prompt", nargs="?", help='What to draw, e.g. "a thick slanted 7".')
    gen.add_argument("--model", required=True, help="A saved pipeline: local folder or Hub repo id.")
    gen.add_argument("--class-label", help='A class id or name ("7", "Sneaker").')
    gen.add_argument("-n", "--num-images", type=int, default=16, help="Number of images (default 16).")
    gen.add_argument("-o", "--output", default="samples.png", help="Output PNG path (default samples.png).")
    gen.add_argument("--steps", type=int, default=50, help="Denoising steps (default 50).")
    gen.add_argument("--guidance-scale", type=float, default=3.0, help="Classifier-free guidance (default 3.0).")
    gen.add_argument("--scheduler", choices=sorted(SCHEDULERS), help="Swap the pipeline's scheduler.")
    gen.add_argument("--seed", type=int, default=0, help="Random seed (default 0).")
    gen.set_defaults(func=generate)
