"""`mnist-diffusion generate`: sample a grid of images from a saved pipeline with a prompt and/or a class label."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING

from ..loading import SCHEDULERS, parse_class_label
from ..pretrained import FAST_GUIDANCE_SCALE, FAST_STEPS
from .arguments import (
    add_guidance_interval_arguments,
    check_image_output,
    check_model_flags,
    finite_float,
    open_sampling_model,
    seed_number,
)

if TYPE_CHECKING:
    import PIL.Image

#: Largest `-n` in one grid (100 x 100 cells: 2800 x 2800 pixels for MNIST); run again with another `--seed` for more.
MAX_IMAGES = 10_000
#: `-n` when not given.
DEFAULT_IMAGES = 16


def generate(args: argparse.Namespace) -> Path:
    r"""
    Generate `args.num_images` images for the prompt and/or label and save them as one grid image; with
    `--best-of N`, the grid holds the `--keep` best of N candidates by CLIP score instead.

    Image `i` (row by row) is drawn with its own generator seeded `--seed + i`, as diffusers users pass a list of
    generators, so it can be reproduced alone (`-n 1 --seed <seed + i>`) and does not depend on `--batch-size`.
    Images are generated `--batch-size` at a time and pasted into the grid as they come, so memory stays bounded by
    one batch and the grid (784 bytes per MNIST image) even for `-n 10000`.
    """
    import PIL.Image
    import torch

    if args.prompt is None and args.class_label is None:
        raise ValueError("Give a prompt, --class-label, or both.")
    if args.best_of is None and (args.keep is not None or args.clip_model is not None):
        raise ValueError("--keep and --clip-model only apply with --best-of N.")
    if args.best_of is not None and args.num_images is not None:
        raise ValueError(
            f"-n/--num-images {args.num_images} does not apply with --best-of {args.best_of}: the grid holds the "
            "--keep best of the N candidates; pass --keep K (1..N) for K images."
        )
    keep = 1 if args.keep is None else args.keep
    if args.best_of is not None and not 1 <= keep <= args.best_of:
        raise ValueError(f"--best-of {args.best_of} --keep {keep}; expected 1 <= keep <= best-of.")
    if args.best_of is not None:
        num_images = keep
    else:
        num_images = DEFAULT_IMAGES if args.num_images is None else args.num_images
    if not 1 <= num_images <= MAX_IMAGES:
        raise ValueError(
            f"-n/--num-images is {num_images}; expected 1 to {MAX_IMAGES} per grid (run again with another "
            "--seed for more)."
        )
    if args.batch_size < 1:
        raise ValueError(f"--batch-size is {args.batch_size}; expected at least 1.")
    output = check_image_output("-o/--output", args.output)
    check_model_flags(args)
    pipe, _, steps, guidance_scale = open_sampling_model(args)
    if args.lora or args.lora_scale or args.adapter_guidance_stop is not None:
        from ..lora_hub import load_lora_adapters

        if not args.lora:
            flag = "--lora-scale" if args.lora_scale else "--adapter-guidance-stop"
            raise ValueError(f"{flag} applies to LoRA adapters; pass --lora DIR_OR_REPO too.")
        load_lora_adapters(pipe, args.lora, args.lora_scale)
    sampling = {
        "prompt": args.prompt,
        "class_labels": parse_class_label(args.class_label),
        "num_inference_steps": steps,
        "guidance_scale": guidance_scale,
        "guidance_start": args.guidance_start,
        "guidance_stop": args.guidance_stop,
    }
    if args.adapter_guidance_stop is not None:
        sampling["adapter_guidance_stop"] = args.adapter_guidance_stop
    cols = math.ceil(math.sqrt(num_images))
    rows = math.ceil(num_images / cols)
    if args.best_of is None:
        grid = None
        for start in range(0, num_images, args.batch_size):
            seeds = range(args.seed + start, args.seed + min(start + args.batch_size, num_images))
            generators = [torch.Generator().manual_seed(seed) for seed in seeds]
            images = pipe(num_images_per_prompt=len(generators), generator=generators, **sampling).images
            grid = grid or PIL.Image.new(images[0].mode, (cols * images[0].width, rows * images[0].height))
            paste_into_grid(grid, images, start, cols)
    else:
        from ..clip_model import ClipScorer
        from ..image_grid import image_grid
        from ..selection import select_best

        scorer = ClipScorer.from_pretrained(args.clip_model)
        generator = torch.Generator().manual_seed(args.seed)
        selection = select_best(pipe, scorer, num_candidates=args.best_of, keep=keep, generator=generator, **sampling)
        print(f"Kept {keep} of {args.best_of} candidates; mean CLIP score {selection.scores.mean():.2f}")
        images = pipe.image_processor.postprocess(selection.images * 2 - 1, output_type="pil")
        grid = image_grid(images, rows=rows, cols=cols)
    output.parent.mkdir(parents=True, exist_ok=True)
    grid.save(output)
    print(f"Saved {num_images} images to {output}")
    if args.best_of is None:
        last = num_images - 1
        print(
            f"Image i (row by row, from 0) was drawn with seed {args.seed} + i; to get one alone, run this command "
            f"with -n 1 --seed {args.seed} + i (the last image: -n 1 --seed {args.seed + last})."
        )
    return output


def paste_into_grid(grid: PIL.Image.Image, images: list[PIL.Image.Image], start: int, cols: int) -> None:
    """Paste `images` into the cells `start`, `start + 1`, ... of `grid` (row by row, `cols` cells a row)."""
    for i, image in enumerate(images, start=start):
        grid.paste(image, ((i % cols) * image.width, (i // cols) * image.height))


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `generate` subcommand to the `mnist-diffusion` parser."""
    gen = commands.add_parser("generate", help="Generate a grid of images from a prompt and/or a class label.")
    gen.add_argument("prompt", nargs="?", help='What to draw, e.g. "a thick slanted 7".')
    gen.add_argument(
        "--model", help="A saved pipeline: local folder or Hub repo id (default: the released model, shipped offline)."
    )
    gen.add_argument(
        "--fast",
        action="store_true",
        help=f"Use the shipped few-step model (distilled from the released one; the student distilled for --steps): "
        f"{FAST_STEPS} steps and guidance {FAST_GUIDANCE_SCALE} unless --steps / --guidance-scale say otherwise, one "
        "network pass per step.",
    )
    gen.add_argument("--class-label", help='A class id or name ("7", "Sneaker").')
    gen.add_argument(
        "-n",
        "--num-images",
        type=int,
        help=f"Number of images, at most {MAX_IMAGES} (default {DEFAULT_IMAGES}; with --best-of, --keep sets it).",
    )
    gen.add_argument(
        "-o", "--output", default="samples.png", help="Output image (.png, .jpg, ...; default samples.png)."
    )
    gen.add_argument("--steps", type=int, help="Denoising steps (default 50; with --fast 4).")
    gen.add_argument(
        "--guidance-scale",
        type=finite_float,
        help=f"Classifier-free guidance (default 3.0; with --fast {FAST_GUIDANCE_SCALE}).",
    )
    add_guidance_interval_arguments(gen)
    gen.add_argument("--scheduler", choices=sorted(SCHEDULERS), help="Swap the pipeline's scheduler.")
    gen.add_argument(
        "--lora",
        action="append",
        metavar="DIR_OR_REPO",
        help="A LoRA adapter (folder or Hub repo id, e.g. from training/train_lora.py) for the model; repeat to blend "
        "several.",
    )
    gen.add_argument(
        "--lora-scale",
        type=finite_float,
        action="append",
        metavar="S",
        help="Weight of the --lora adapters (default 1.0): once for all, or once per --lora in the same order.",
    )
    gen.add_argument(
        "--adapter-guidance-stop",
        type=finite_float,
        metavar="F",
        help="With --lora: guide from the base model (adapters off in the unconditional branch) at noise levels "
        "above 1 - F of the schedule (the pipeline's adapter_guidance_stop, default 0.6); 0 guides plainly.",
    )
    gen.add_argument("--seed", type=seed_number, default=0, help="Image i uses seed + i (default 0).")
    gen.add_argument(
        "--batch-size", type=int, default=64, help="Images per pipeline call; bounds the memory (default 64)."
    )
    gen.add_argument(
        "--best-of",
        type=int,
        metavar="N",
        help="CLIP-guided selection: draw N candidates and keep the --keep best by CLIP score against the prompt "
        "(or the class name); the grid holds the kept images.",
    )
    gen.add_argument(
        "--keep",
        type=int,
        metavar="K",
        help="With --best-of N: candidates kept in the grid, 1..N (default 1).",
    )
    gen.add_argument(
        "--clip-model",
        metavar="NAME_OR_PATH",
        help="With --best-of: the CLIP that scores candidates, a folder or Hub id (default: the shipped MNIST-CLIP).",
    )
    gen.set_defaults(func=generate)
