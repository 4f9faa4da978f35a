"""`mnist-diffusion generate`: sample a grid of images from a saved pipeline with a prompt and/or a class label."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import PIL.Image
import torch

from ..clip_model import ClipScorer
from ..image_grid import image_grid
from ..pipelines import MnistDiffusionPipeline
from ..pretrained import FAST_DIFFUSION_MODEL
from ..selection import select_best
from .loading import SCHEDULERS, add_guidance_interval_arguments, open_pipeline, parse_class_label

# `--fast` defaults: the few-step model's steps and guidance scale (see the model card).
FAST_STEPS, FAST_GUIDANCE_SCALE = 4, 1.4


def generate(args: argparse.Namespace) -> Path:
    """Generate `args.num_images` images per prompt or label and save them as one grid image."""
    if args.prompt is None and args.class_label is None:
        raise ValueError("Give a prompt, --class-label, or both.")
    if args.num_images < 1:
        raise ValueError(f"-n/--num-images is {args.num_images}; expected at least 1.")
    if args.best_of is None and (args.keep is not None or args.clip_model is not None):
        raise ValueError("--keep and --clip-model only apply with --best-of N.")
    keep = 1 if args.keep is None else args.keep
    if args.best_of is not None and not 1 <= keep <= args.best_of:
        raise ValueError(f"--best-of {args.best_of} --keep {keep}; expected 1 <= keep <= best-of.")
    if args.fast and args.model is not None:
        raise ValueError(f"--fast uses the shipped few-step model; got --model {args.model!r} too. Pass one of them.")
    pipe = open_pipeline(str(FAST_DIFFUSION_MODEL) if args.fast else args.model, args.scheduler)
    steps, guidance_scale = (FAST_STEPS, FAST_GUIDANCE_SCALE) if args.fast else (50, 3.0)
    class_label = parse_class_label(args.class_label)
    sampling = {
        "prompt": args.prompt,
        "class_labels": class_label,
        "num_inference_steps": steps if args.steps is None else args.steps,
        "guidance_scale": guidance_scale if args.guidance_scale is None else args.guidance_scale,
        "guidance_start": args.guidance_start,
        "guidance_stop": args.guidance_stop,
        "generator": torch.Generator().manual_seed(args.seed),
    }
    if args.best_of is None:
        images = pipe(num_images_per_prompt=args.num_images, **sampling).images
    else:
        scorer = ClipScorer.from_pretrained(args.clip_model)
        images = generate_best_of(pipe, scorer, args.num_images, args.best_of, keep, sampling)
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    grid = image_grid(images, rows=rows, cols=cols)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    grid.save(output)
    print(f"Saved {len(images)} images to {output}")
    return output


def generate_best_of(
    pipe: MnistDiffusionPipeline, scorer: ClipScorer, num_images: int, best_of: int, keep: int, sampling: dict
) -> list[PIL.Image.Image]:
    """`num_images` PIL images: each group of `keep` is the CLIP-best of `best_of` fresh candidates."""
    rounds = math.ceil(num_images / keep)
    selections = [select_best(pipe, scorer, num_candidates=best_of, keep=keep, **sampling) for _ in range(rounds)]
    kept = torch.cat([selection.images for selection in selections])[:num_images]
    scores = torch.cat([selection.scores for selection in selections])[:num_images]
    print(f"Kept {len(kept)} of {rounds * best_of} candidates; mean CLIP score {scores.mean():.2f}")
    return pipe.image_processor.postprocess(kept * 2 - 1, output_type="pil")


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
        help=f"Use the shipped few-step model (distilled from the released one): {FAST_STEPS} steps and guidance "
        f"{FAST_GUIDANCE_SCALE} unless --steps / --guidance-scale say otherwise, one network pass per step.",
    )
    gen.add_argument("--class-label", help='A class id or name ("7", "Sneaker").')
    gen.add_argument("-n", "--num-images", type=int, default=16, help="Number of images (default 16).")
    gen.add_argument("-o", "--output", default="samples.png", help="Output PNG path (default samples.png).")
    gen.add_argument("--steps", type=int, help="Denoising steps (default 50; with --fast 4).")
    gen.add_argument("--guidance-scale", type=float, help="Classifier-free guidance (default 3.0; with --fast 1.4).")
    add_guidance_interval_arguments(gen)
    gen.add_argument("--scheduler", choices=sorted(SCHEDULERS), help="Swap the pipeline's scheduler.")
    gen.add_argument("--seed", type=int, default=0, help="Random seed (default 0).")
    gen.add_argument(
        "--best-of",
        type=int,
        metavar="N",
        help="CLIP-guided selection: draw N candidates per --keep images and keep those with the best CLIP score "
        "against the prompt (or the class name); the grid still holds -n images, made from ceil(n / keep) * N "
        "candidates.",
    )
    gen.add_argument(
        "--keep", type=int, metavar="K", help="With --best-of N: images kept per N candidates, 1..N (default 1)."
    )
    gen.add_argument(
        "--clip-model",
        metavar="NAME_OR_PATH",
        help="With --best-of: the CLIP that scores candidates, a folder or Hub id (default: the shipped MNIST-CLIP).",
    )
    gen.set_defaults(func=generate)
