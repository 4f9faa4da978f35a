"""`mnist-diffusion generate-dataset`: a labelled dataset in the Hub's parquet layout, on one or many processes."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..pretrained import FAST_GUIDANCE_SCALE, FAST_STEPS
from .arguments import RefuseToken, check_model_flags, open_sampling_model

CONDITIONINGS = ("auto", "label", "prompt", "label+prompt")


def read_prompts_file(path: str) -> tuple[list[str], list[str]]:
    """The class labels and prompts of a `--prompts-file`: one `CLASS: PROMPT` a line ("7: a thick slanted 7")."""
    labels, prompts = [], []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ValueError(
            f"--prompts-file {path!r} does not exist; expected a text file of CLASS: PROMPT lines."
        ) from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        label, separator, prompt = line.partition(":")
        if not separator or not label.strip() or not prompt.strip():
            raise ValueError(
                f"--prompts-file {path!r} line {number} is {line!r}; expected CLASS: PROMPT, e.g. '7: a thick 7'."
            )
        labels.append(label.strip())
        prompts.append(prompt.strip())
    if not prompts:
        raise ValueError(f"--prompts-file {path!r} holds no prompts; expected CLASS: PROMPT lines.")
    return labels, prompts


def generate_dataset_command(args: argparse.Namespace) -> Path:
    """Generate `args.num_images` labelled images into `args.output_dir`, then push them if asked."""
    from accelerate import PartialState

    from ..loading import parse_class_label
    from ..synthetic_dataset import DEFAULT_SHARD_SIZE, check_output_folder, generate_dataset, push_dataset_to_hub

    if args.num_images < 1:
        raise ValueError(f"--num-images is {args.num_images}; expected at least 1.")
    if args.prompts_file and args.class_labels:
        raise ValueError("--prompts-file names the class of each prompt; expected it without --class-labels.")
    class_labels = [parse_class_label(label) for label in args.class_labels] if args.class_labels else None
    prompts = None
    if args.prompts_file:
        labels, prompts = read_prompts_file(args.prompts_file)
        class_labels = [parse_class_label(label) for label in labels]
    check_output_folder(Path(args.output_dir))  # a foreign folder is refused before the model loads
    check_model_flags(args)
    pipe, model_name, steps, guidance_scale = open_sampling_model(args)
    settings = generate_dataset(
        pipe,
        args.output_dir,
        args.num_images,
        class_labels=class_labels,
        prompts=prompts,
        conditioning=args.conditioning,
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        guidance_start=args.guidance_start,
        guidance_stop=args.guidance_stop,
        seed=args.seed,
        batch_size=args.batch_size,
        shard_size=DEFAULT_SHARD_SIZE if args.shard_size is None else args.shard_size,
        model_name=model_name,
    )
    state = PartialState()
    if state.is_main_process:
        print(f"Wrote {settings.num_images} images in {settings.num_shards} shards to {args.output_dir}")
        if args.push_to_hub:
            commit = push_dataset_to_hub(args.output_dir, args.push_to_hub, private=args.private or None)
            print(f"Pushed {args.output_dir} to {commit.commit_url}")
    return Path(args.output_dir)


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `generate-dataset` subcommand to the `mnist-diffusion` parser."""
    from ..loading import SCHEDULERS
    from .arguments import add_guidance_interval_arguments, finite_float, seed_number

    parser = commands.add_parser(
        "generate-dataset",
        help="Generate a labelled dataset (Hub parquet layout, MNIST's columns); resumable, several processes with "
        "accelerate launch.",
    )
    parser.add_argument("--num-images", type=int, required=True, help="Images in the dataset.")
    parser.add_argument(
        "--output-dir", required=True, help="New or empty folder; the folder of an unfinished run resumes it."
    )
    parser.add_argument(
        "--model", help="A saved pipeline: local folder or Hub repo id (default: the released model, shipped offline)."
    )
    parser.add_argument(
        "--fast",
        action="store_true",
        help=f"Use the shipped few-step student distilled for --steps ({FAST_STEPS} steps and guidance "
        f"{FAST_GUIDANCE_SCALE} unless --steps / --guidance-scale say otherwise).",
    )
    parser.add_argument(
        "--class-labels",
        nargs="+",
        metavar="CLASS",
        help="Classes to cycle through, ids or names (default: every class of the model, balanced).",
    )
    parser.add_argument(
        "--prompts-file",
        help='A text file of "CLASS: PROMPT" lines ("7: a thick slanted 7"); images cycle through its lines.',
    )
    parser.add_argument(
        "--conditioning",
        choices=CONDITIONINGS,
        default="auto",
        help="What the model is given: auto is label+prompt when it reads both (the prompt names the class).",
    )
    parser.add_argument("--steps", type=int, help=f"Denoising steps (default 50; with --fast {FAST_STEPS}).")
    parser.add_argument(
        "--guidance-scale",
        type=finite_float,
        help=f"Classifier-free guidance (default 3.0; with --fast {FAST_GUIDANCE_SCALE}).",
    )
    add_guidance_interval_arguments(parser)
    parser.add_argument("--scheduler", choices=sorted(SCHEDULERS), help="Swap the pipeline's scheduler.")
    parser.add_argument("--seed", type=seed_number, default=0, help="Image i uses seed + i (default 0).")
    parser.add_argument("--batch-size", type=int, default=64, help="Images per pipeline call (default 64).")
    parser.add_argument(
        "--shard-size", type=int, help="Images per parquet shard, the most a crash can lose (default 1000)."
    )
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help='Then upload it as a dataset repo ("user/name").')
    parser.add_argument("--private", action="store_true", help="With --push-to-hub: create the repo as private.")
    parser.add_argument("--token", action=RefuseToken, help=argparse.SUPPRESS)
    parser.set_defaults(func=generate_dataset_command)
