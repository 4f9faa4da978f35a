"""The flag groups the diffusion training scripts share (data, optimisation, bookkeeping) and their checks."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable

from accelerate.utils import is_wandb_available
from diffusers.optimization import SchedulerType

from ..captions import CAPTION_MODES
from .optimization import OPTIMIZERS

MIXED_PRECISIONS = ("no", "bf16", "fp16")


def add_data_arguments(group: argparse._ArgumentGroup, caption_modes: tuple[str, ...] = CAPTION_MODES) -> None:
    r"""
    The training data flags: a dataset (Hub id or folder) and its columns, and the captions (one of `caption_modes`)
    with their conditioning dropout. A script changes defaults with `parser.set_defaults`.
    """
    group.add_argument(
        "--dataset_name", default="ylecun/mnist", help="Hub id or local folder (parquet, save_to_disk, images)."
    )
    group.add_argument("--dataset_config_name", default=None)
    group.add_argument("--cache_dir", default=None, help="Where `datasets` caches downloads.")
    group.add_argument("--train_split", default="train")
    group.add_argument("--image_column", default="image")
    group.add_argument("--label_column", default="label", help="A `ClassLabel` (or integer) column.")
    group.add_argument("--caption_column", default=None, help="Captions to use instead of generated ones.")
    group.add_argument("--max_train_samples", type=int, default=None)
    group.add_argument("--caption_mode", default="label+style", help=f"One of {list(caption_modes)}.")
    group.add_argument(
        "--cond_dropout_prob",
        type=float,
        default=0.1,
        help="Probability of each of two events: drop both text and class (the unconditional branch: empty prompt "
        "and null class), and drop the text only (class-only generation).",
    )
    group.add_argument(
        "--class_dropout_prob",
        type=float,
        default=0.3,
        help="Probability of dropping the class only, so the prompt alone must carry the digit (prompt-only "
        "generation such as 'a thick slanted 7'). With --cond_dropout_prob, at most 1 in all.",
    )


def add_optimisation_arguments(group: argparse._ArgumentGroup) -> None:
    """The optimisation flags (a script changes defaults with `parser.set_defaults`)."""
    group.add_argument("--output_dir", default="mnist-diffusion-model")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--train_batch_size", type=int, default=128, help="Per process.")
    group.add_argument("--max_train_steps", type=int, default=None, help="Optimizer updates in all.")
    group.add_argument("--gradient_accumulation_steps", type=int, default=1)
    group.add_argument(
        "--optimizer",
        default="muon",
        choices=list(OPTIMIZERS),
        help="muon (default): Muon for the hidden layers' weight matrices and conv kernels, AdamW for the rest, at "
        "the same --learning_rate and --adam_weight_decay (see mnist_diffusion/training/muon_optimizer.py); adamw: "
        "AdamW for all.",
    )
    group.add_argument("--learning_rate", type=float, default=4e-3)
    group.add_argument("--lr_scheduler", default="cosine", help="Any name of diffusers' `get_scheduler`.")
    group.add_argument("--lr_warmup_steps", type=int, default=100)
    group.add_argument("--adam_beta1", type=float, default=0.9)
    group.add_argument("--adam_beta2", type=float, default=0.999)
    group.add_argument("--adam_weight_decay", type=float, default=1e-2)
    group.add_argument("--adam_epsilon", type=float, default=1e-8)
    group.add_argument("--max_grad_norm", type=float, default=1.0)
    group.add_argument(
        "--mixed_precision", default=None, help=f"One of {list(MIXED_PRECISIONS)}; default: accelerate's."
    )


def add_bookkeeping_arguments(group: argparse._ArgumentGroup) -> None:
    """Checkpoint, validation, logging and Hub flags."""
    group.add_argument("--checkpointing_steps", type=int, default=500)
    group.add_argument("--checkpoints_total_limit", type=int, default=None)
    group.add_argument(
        "--resume_from_checkpoint",
        default=None,
        help="'latest' (the highest complete checkpoint in --output_dir; starts fresh if there is none) or a path.",
    )
    group.add_argument("--validation_steps", type=int, default=500, help="0 disables validation.")
    group.add_argument("--validation_prompts", nargs="*", default=None)
    group.add_argument("--validation_images_per_class", type=int, default=4)
    group.add_argument("--validation_inference_steps", type=int, default=25)
    group.add_argument("--validation_guidance_scale", type=float, default=3.0)
    group.add_argument("--report_to", default="tensorboard", help="'tensorboard', 'wandb', 'all' or 'none'.")
    group.add_argument("--logging_dir", default="logs", help="Inside --output_dir.")
    group.add_argument("--push_to_hub", action="store_true")
    group.add_argument(
        "--push_checkpoints",
        action="store_true",
        help="With --push_to_hub, also upload each checkpoint to checkpoints/checkpoint-N/ in the Hub repo.",
    )
    group.add_argument("--hub_model_id", default=None)
    group.add_argument("--hub_token", default=None, help=argparse.SUPPRESS)  # refused: see validate_training_args


def parse_int_list(flag: str, value: str) -> tuple[int, ...]:
    """`"32,64,128"` -> `(32, 64, 128)`; anything else raises `ValueError` naming `flag`."""
    try:
        values = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise ValueError(f"{flag} is {value!r}; expected comma-separated integers such as '32,64,128'.") from None
    if any(v < 0 for v in values):
        raise ValueError(f"{flag} is {value!r}; expected non-negative integers.")
    return values


def validate_training_args(args: argparse.Namespace, caption_modes: tuple[str, ...] = CAPTION_MODES) -> None:
    r"""
    The checks of the shared groups: no `--hub_token`, finite numbers, wandb installed when asked, known choices,
    dropout probabilities that add up, positive sizes and non-negative step counts; `ValueError` names the flag.
    """
    if args.hub_token is not None:  # its value is never printed
        raise ValueError(
            "--hub_token is refused: a token on the command line is printed by `accelerate launch` when the run "
            "fails (this refusal included: revoke the token if that output is shared) and is visible in process "
            "lists; expected the HF_TOKEN environment variable or a token saved with `hf auth login`."
        )
    for name, value in vars(args).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"--{name} is {value}; expected a finite number.")
    if args.report_to == "wandb" and not is_wandb_available():
        raise ValueError(
            "--report_to is 'wandb' but wandb is not installed, so nothing would be logged; expected `pip install "
            "wandb` first, or --report_to tensorboard (the default) or none."
        )
    if args.push_checkpoints and not args.push_to_hub:
        raise ValueError("--push_checkpoints uploads checkpoints to the --push_to_hub repo; pass --push_to_hub too.")
    schedules = [member.value for member in SchedulerType]
    choices = (
        ("--lr_scheduler", args.lr_scheduler, tuple(schedules)),
        ("--caption_mode", args.caption_mode, caption_modes),
        ("--mixed_precision", args.mixed_precision, (None,) + MIXED_PRECISIONS),
    )
    for flag, value, allowed in choices:
        if value not in allowed:
            raise ValueError(f"{flag} is {value!r}; expected one of {[a for a in allowed if a]}.")
    if not 0 <= args.cond_dropout_prob <= 0.5:
        raise ValueError(f"--cond_dropout_prob is {args.cond_dropout_prob}; expected a value in [0, 0.5].")
    if not 0 <= args.class_dropout_prob <= 1 - 2 * args.cond_dropout_prob:
        raise ValueError(
            f"--class_dropout_prob is {args.class_dropout_prob}; expected a value in [0, 1 - 2 * --cond_dropout_prob]."
        )
    positive = ("train_batch_size", "gradient_accumulation_steps")
    positive += ("validation_images_per_class", "validation_inference_steps")
    for name in positive:
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} is {getattr(args, name)}; expected a positive integer.")
    for name in ("max_train_steps", "checkpoints_total_limit"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name} is {getattr(args, name)}; expected a positive integer.")
    for name in ("checkpointing_steps", "validation_steps", "lr_warmup_steps"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name} is {getattr(args, name)}; expected 0 or more.")
    if args.learning_rate <= 0:
        raise ValueError(f"--learning_rate is {args.learning_rate}; expected a value > 0.")


def hub_repo_id(args: argparse.Namespace) -> str:
    """`--hub_model_id`, or the name of `--output_dir`."""
    return args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir))


def run_script(
    parse: Callable[[list[str] | None], argparse.Namespace],
    entry: Callable[[argparse.Namespace], object],
    argv: list[str] | None = None,
    script: str = "train.py",
) -> int:
    r"""
    A training script's entry point: `entry(parse(argv))`; a bad value or path prints one line naming it (exit
    status 2), as the CLI does.

    Example (the last line of a script):

    ```py
    >>> sys.exit(run_script(parse_args, main, script="train.py"))
    ```
    """
    try:
        entry(parse(argv))
    except (ValueError, OSError) as error:
        print(f"{script}: error: {error}", file=sys.stderr)
        return 2
    return 0
