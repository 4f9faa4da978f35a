"""The `mnist-diffusion` command line: generate images from a saved pipeline, push it to the Hugging Face Hub."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from .hub import push_pipeline_to_hub
from .image_grid import image_grid
from .pipelines import MnistDiffusionPipeline
from .schedulers import MnistDDPMScheduler

SCHEDULERS = {"ddpm": MnistDDPMScheduler, "ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler}


def load_pipeline(model: str, scheduler: str | None = None) -> MnistDiffusionPipeline:
    r"""
    Load a pipeline from a local folder or a Hub repo id, optionally swapping its scheduler ("ddpm", "ddim", "dpm").

    Example:

    ```py
    >>> from mnist_diffusion.cli import load_pipeline

    >>> pipe = load_pipeline("path/to/pipeline", scheduler="dpm")  # doctest: +SKIP
    ```
    """
    if scheduler is not None and scheduler not in SCHEDULERS:
        raise ValueError(f"Unknown scheduler {scheduler!r}; expected one of {sorted(SCHEDULERS)}.")
    pipe = MnistDiffusionPipeline.from_pretrained(model)
    if scheduler is not None:
        pipe.scheduler = SCHEDULERS[scheduler].from_config(pipe.scheduler.config)
    return pipe


def generate(args: argparse.Namespace) -> Path:
    """Generate `args.num_images` images per prompt or label and save them as one grid image."""
    if args.prompt is None and args.class_label is None:
        raise ValueError("Give a prompt, --class-label, or both.")
    if args.num_images < 1:
        raise ValueError(f"-n/--num-images is {args.num_images}; expected at least 1.")
    pipe = load_pipeline(args.model, args.scheduler)
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


def push(args: argparse.Namespace) -> str:
    """Upload the saved pipeline `args.model` to the Hub repo `args.repo_id`: weights, code, model card, samples."""
    if args.sample_steps < 1:
        raise ValueError(f"--sample-steps is {args.sample_steps}; expected at least 1.")
    commit = push_pipeline_to_hub(
        args.model,
        args.repo_id,
        token=args.token,
        private=args.private or None,
        revision=args.revision,
        commit_message=args.commit_message,
        create_pr=args.create_pr,
        variant=args.variant,
        delete_missing=args.delete_missing,
        samples=args.samples,
        sample_steps=args.sample_steps,
    )
    print(f"Pushed {args.model} to {commit.pr_url or commit.commit_url}")
    return commit.oid


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `mnist-diffusion` command."""
    parser = argparse.ArgumentParser(prog="mnist-diffusion", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

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

    hub = commands.add_parser("push", help="Upload a saved pipeline to the Hugging Face Hub, with a model card.")
    hub.add_argument("model", help="Folder of a pipeline saved with save_pretrained (or by training/train.py).")
    hub.add_argument("--repo-id", required=True, help='Hub repo, e.g. "user/mnist-diffusion"; created if needed.')
    hub.add_argument("--revision", help="Branch to push to, created from main if needed (default main).")
    hub.add_argument("--private", action="store_true", help="Create the repo as private (an existing repo is kept).")
    hub.add_argument("--variant", choices=["fp16", "bf16"], help="Also upload half-precision weights.")
    hub.add_argument("--commit-message", help='Default "Upload MnistDiffusionPipeline".')
    hub.add_argument("--create-pr", action="store_true", help="Open a pull request instead of committing.")
    hub.add_argument(
        "--delete-missing", action="store_true", help="Delete the repo's files that this push does not contain."
    )
    hub.add_argument("--no-samples", dest="samples", action="store_false", help="Do not generate samples.png.")
    hub.add_argument("--sample-steps", type=int, default=50, help="Denoising steps for samples.png (default 50).")
    hub.add_argument("--token", help="Hub token (default: HF_TOKEN, or the one saved by `hf auth login`).")
    hub.set_defaults(func=push)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `mnist-diffusion` console script."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, OSError) as error:
        print(f"mnist-diffusion: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
