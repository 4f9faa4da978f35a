"""Train a text- and class-conditioned MnistDiffusionPipeline: `accelerate launch training/train.py ...`."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, is_wandb_available, set_seed
from diffusers.optimization import SchedulerType, get_scheduler
from diffusers.training_utils import EMAModel
from PIL import Image
from safetensors.torch import load_file
from tqdm.auto import tqdm
from transformers import CLIPTextModel, CLIPTokenizer
from transformers.utils import logging as transformers_logging

from mnist_diffusion import (
    MnistDDPMScheduler,
    MnistDiffusionPipeline,
    MnistUNet2DConditionModel,
    build_caption_tokenizer,
    build_text_encoder,
)
from mnist_diffusion.captions import CAPTION_MODES, TrainingCaptioner, measure_style
from mnist_diffusion.classifier import MnistClassifier
from mnist_diffusion.data import (
    EpochShuffleSampler,
    ImageClassData,
    ImageClassDataset,
    load_split,
    prepare_training_data,
)
from mnist_diffusion.evaluation import ReferenceFeatures, evaluate
from mnist_diffusion.hub import push_checkpoint, push_pipeline_to_hub, resolve_token
from mnist_diffusion.image_grid import image_grid
from mnist_diffusion.pretrained import MNIST_CLIP
from mnist_diffusion.visualization import EVAL_HISTORY_NAME

# The training scripts are not a package: the Muon optimizer is imported from beside this file.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from muon_optimizer import MuonAdamW, split_muon_params  # noqa: E402

logger = get_logger(__name__)

TRAINING_ARGS_NAME = "training_args.json"
CHECKPOINT_STATE_NAME = "training_state.json"
#: Inside --output_dir: the final pipeline is written to the first, complete, then swapped in; the components it
#: replaces wait in the second until the swap is done.
PIPELINE_STAGING_NAME = ".pipeline.tmp"
PIPELINE_RETIRED_NAME = ".pipeline.old"
PREDICTION_TYPES = ("epsilon", "v_prediction")
MIXED_PRECISIONS = ("no", "bf16", "fp16")
OPTIMIZERS = ("adamw", "muon")
# --text_encoder_name_or_path values besides a folder or Hub id: build a small encoder, or pick by the dataset.
BUILD_TEXT_ENCODER = "build"
AUTO_TEXT_ENCODER = "auto"
#: The classes for which "auto" picks the bundled MNIST-CLIP text tower (it was trained on digit captions).
DIGIT_LABELS = [str(digit) for digit in range(10)]
# Flags that describe the models to build; a fine-tuned pipeline (--pretrained_model_name_or_path) brings its own.
ARCHITECTURE_FLAGS = (
    "block_out_channels",
    "layers_per_block",
    "attention_levels",
    "attention_head_dim",
    "patch_size",
    "upsample_type",
    "text_encoder_name_or_path",
    "text_encoder_hidden_size",
    "prediction_type",
)


def parse_args(input_args: list[str] | None = None) -> argparse.Namespace:
    r"""
    Parse and validate the command line; every bad value raises `ValueError` naming it and what was expected.

    Example:

    ```py
    >>> from training.train import parse_args

    >>> args = parse_args(["--output_dir", "out", "--max_train_steps", "10"])
    >>> args.block_out_channels, args.caption_mode
    ((32, 64), 'label+style')
    ```
    """
    parser = argparse.ArgumentParser(description=__doc__)
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset_name", default="ylecun/mnist", help="Hub id or local folder (parquet, save_to_disk, images)."
    )
    data.add_argument("--dataset_config_name", default=None)
    data.add_argument("--cache_dir", default=None, help="Where `datasets` caches downloads.")
    data.add_argument("--train_split", default="train")
    data.add_argument("--image_column", default="image")
    data.add_argument("--label_column", default="label", help="A `ClassLabel` (or integer) column.")
    data.add_argument("--caption_column", default=None, help="Captions to use instead of generated ones.")
    data.add_argument("--max_train_samples", type=int, default=None)
    data.add_argument("--resolution", type=int, default=28, help="Images are resized only if their size differs.")
    data.add_argument("--dataloader_num_workers", type=int, default=0)
    data.add_argument("--caption_mode", default="label+style", help=f"One of {list(CAPTION_MODES)}.")
    data.add_argument(
        "--cond_dropout_prob",
        type=float,
        default=0.1,
        help="Probability of each of two events: drop both text and class (the unconditional branch: empty prompt "
        "and null class), and drop the text only (class-only generation).",
    )
    data.add_argument(
        "--class_dropout_prob",
        type=float,
        default=0.3,
        help="Probability of dropping the class only, so the prompt alone must carry the digit (prompt-only "
        "generation such as 'a thick slanted 7'). With --cond_dropout_prob, at most 1 in all.",
    )

    model = parser.add_argument_group("model")
    model.add_argument(
        "--pretrained_model_name_or_path",
        default=None,
        help="Fine-tune a saved MnistDiffusionPipeline (folder or Hub id): start from its UNet, text encoder, "
        "tokenizer and noise schedule. The flags below that describe the models must then stay unset.",
    )
    model.add_argument(
        "--block_out_channels", default="32,64", help="UNet channels per level (0.76M parameters by default)."
    )
    model.add_argument("--layers_per_block", type=int, default=1)
    model.add_argument("--attention_levels", default="0,1", help="1/0 per level: self- and cross-attention.")
    model.add_argument("--attention_head_dim", type=int, default=32)
    model.add_argument(
        "--patch_size",
        type=int,
        default=2,
        help="Pixels per side folded into channels before the first level (1: none; 2: the first level runs at 14x14, "
        "about half the cost per image).",
    )
    model.add_argument(
        "--upsample_type",
        default="conv_transpose",
        choices=["interpolate", "conv_transpose"],
        help="Upsampling on the way up: nearest + 3x3 conv (interpolate) or a 2x2 transposed conv to the next width.",
    )
    model.add_argument(
        "--text_encoder_name_or_path",
        default=AUTO_TEXT_ENCODER,
        help="A CLIP text encoder and tokenizer (folder or Hub id; a saved pipeline works too), frozen unless "
        f"--train_text_encoder; {BUILD_TEXT_ENCODER!r}: a small encoder built from the caption vocabulary and trained "
        f"jointly; {AUTO_TEXT_ENCODER!r} (default): the bundled MNIST-CLIP text tower for the digits 0-9, else "
        f"{BUILD_TEXT_ENCODER!r}.",
    )
    model.add_argument(
        "--train_text_encoder",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Train the text encoder jointly (default: yes for the built one, no for a loaded one).",
    )
    model.add_argument("--text_encoder_hidden_size", type=int, default=64, help="Hidden size of a built encoder.")
    model.add_argument(
        "--prediction_type",
        default="v_prediction",
        help=f"One of {list(PREDICTION_TYPES)}; v_prediction (default) keeps few-step samplers stable, see README.",
    )

    optim = parser.add_argument_group("optimisation")
    add_optimisation_arguments(optim)
    optim.add_argument(
        "--num_epochs",
        type=int,
        default=7,
        help="One MNIST epoch: ~470 steps at batch 128 (2 to 3 min on 2 CPU cores); --max_train_steps overrides it.",
    )
    optim.add_argument(
        "--snr_gamma", type=float, default=0.0, help="Min-SNR-gamma loss weighting (e.g. 5); 0 (default): plain MSE."
    )
    optim.add_argument(
        "--timestep_log_snr_mean",
        type=float,
        default=None,
        help="Draw training timesteps with log(SNR) ~ N(mean, std^2) (0: equal signal and noise), not uniformly.",
    )
    optim.add_argument("--timestep_log_snr_std", type=float, default=2.0, help="See --timestep_log_snr_mean.")
    optim.add_argument("--use_ema", action=argparse.BooleanOptionalAction, default=True)
    optim.add_argument("--ema_max_decay", type=float, default=0.999)
    optim.add_argument("--ema_power", type=float, default=0.75, help="EMA warmup: decay = 1 - (1 + step) ** -power.")

    book = parser.add_argument_group("bookkeeping")
    add_bookkeeping_arguments(book)
    book.add_argument(
        "--push_checkpoints",
        action="store_true",
        help="With --push_to_hub, also upload each checkpoint to checkpoints/checkpoint-N/ in the Hub repo.",
    )

    evaluation = parser.add_argument_group("evaluation (at every validation step)")
    evaluation.add_argument(
        "--eval_classifier",
        default=None,
        help="A saved MnistClassifier (e.g. mnist_diffusion/pretrained/mnist-classifier). At every validation step, "
        "--eval_num_samples samples (with the validation steps and guidance scale) are drawn and scored as "
        "`mnist-diffusion evaluate` does (label + class prompt, sample i from seed --seed + i): conditional accuracy "
        f"and classifier FID against real images; logged as eval/* and to {EVAL_HISTORY_NAME}.",
    )
    evaluation.add_argument(
        "--eval_num_samples",
        type=int,
        default=None,
        help="Samples per evaluation, a multiple of the classes (default: 25 per class, 250 for 10 classes).",
    )
    evaluation.add_argument(
        "--eval_dataset", default=None, help="Real reference images (Hub id or folder); default: --dataset_name."
    )
    evaluation.add_argument("--eval_split", default="test", help="The split of --eval_dataset to compare with.")

    args = parser.parse_args(input_args)
    if args.pretrained_model_name_or_path:
        for name in ARCHITECTURE_FLAGS:
            if getattr(args, name) != parser.get_default(name):
                raise ValueError(
                    f"--{name} is {getattr(args, name)!r}, but --pretrained_model_name_or_path "
                    f"{args.pretrained_model_name_or_path!r} brings its own models; expected --{name} to stay unset."
                )
            setattr(args, name, None)  # unused, and recorded as such in training_args.json
    else:
        args.block_out_channels = parse_int_list("--block_out_channels", args.block_out_channels)
        args.attention_levels = tuple(bool(v) for v in parse_int_list("--attention_levels", args.attention_levels))
    validate_args(args)
    return args


def add_optimisation_arguments(group: argparse._ArgumentGroup) -> None:
    """The optimisation flags of this script that `distill.py` shares (it changes some defaults)."""
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
        "the same --learning_rate and --adam_weight_decay (see training/muon_optimizer.py); adamw: AdamW for all.",
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
    """Checkpoint, validation, logging and Hub flags of this script that `distill.py` shares."""
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
    group.add_argument("--hub_model_id", default=None)
    group.add_argument("--hub_token", default=None, help=argparse.SUPPRESS)  # refused: see validate_args


def parse_int_list(flag: str, value: str) -> tuple[int, ...]:
    """`"32,64,128"` -> `(32, 64, 128)`; anything else raises `ValueError` naming `flag`."""
    try:
        values = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise ValueError(f"{flag} is {value!r}; expected comma-separated integers such as '32,64,128'.") from None
    if any(v < 0 for v in values):
        raise ValueError(f"{flag} is {value!r}; expected non-negative integers.")
    return values


def validate_bookkeeping_args(args: argparse.Namespace) -> None:
    """Checks this script and `distill.py` share: no `--hub_token`, finite numbers, wandb installed when asked."""
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


def validate_args(args: argparse.Namespace) -> None:
    """Check value ranges and combinations of the parsed arguments."""
    validate_bookkeeping_args(args)
    if args.lr_scheduler not in [member.value for member in SchedulerType]:
        raise ValueError(
            f"--lr_scheduler is {args.lr_scheduler!r}; expected one of {[member.value for member in SchedulerType]}."
        )
    fine_tuning = args.pretrained_model_name_or_path is not None
    choices = (
        ("--caption_mode", args.caption_mode, CAPTION_MODES),
        ("--prediction_type", args.prediction_type, ((None,) if fine_tuning else ()) + PREDICTION_TYPES),
        ("--mixed_precision", args.mixed_precision, (None,) + MIXED_PRECISIONS),
    )
    for flag, value, allowed in choices:
        if value not in allowed:
            raise ValueError(f"{flag} is {value!r}; expected one of {[a for a in allowed if a]}.")
    if args.eval_classifier and not args.validation_steps:
        raise ValueError("--eval_classifier scores samples at validation steps, but --validation_steps is 0.")
    if args.eval_num_samples is not None and args.eval_num_samples < 2:
        raise ValueError(f"--eval_num_samples is {args.eval_num_samples}; expected at least 2 (for classifier FID).")
    if args.push_checkpoints and not args.push_to_hub:
        raise ValueError("--push_checkpoints uploads checkpoints to the --push_to_hub repo; pass --push_to_hub too.")
    if not 0 <= args.cond_dropout_prob <= 0.5:
        raise ValueError(f"--cond_dropout_prob is {args.cond_dropout_prob}; expected a value in [0, 0.5].")
    if not 0 <= args.class_dropout_prob <= 1 - 2 * args.cond_dropout_prob:
        raise ValueError(
            f"--class_dropout_prob is {args.class_dropout_prob}; expected a value in [0, 1 - 2 * --cond_dropout_prob]."
        )
    positive = ("train_batch_size", "gradient_accumulation_steps", "num_epochs", "resolution")
    positive += ("validation_images_per_class", "validation_inference_steps")
    if not fine_tuning:  # a loaded UNet is checked against the data when it is loaded
        if len(args.attention_levels) != len(args.block_out_channels):
            raise ValueError(
                f"--attention_levels has {len(args.attention_levels)} entries for {len(args.block_out_channels)} "
                "levels in --block_out_channels; expected one per level."
            )
        positive += ("layers_per_block", "patch_size", "attention_head_dim")
    for name in positive:
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} is {getattr(args, name)}; expected a positive integer.")
    if not fine_tuning:
        factor = args.patch_size * 2 ** (len(args.block_out_channels) - 1)
        if args.resolution % factor:
            raise ValueError(
                f"--resolution is {args.resolution}; expected a positive multiple of {factor} for this UNet."
            )
    for name in ("max_train_steps", "checkpoints_total_limit"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name} is {getattr(args, name)}; expected a positive integer.")
    for name in ("checkpointing_steps", "validation_steps", "lr_warmup_steps", "dataloader_num_workers"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name} is {getattr(args, name)}; expected 0 or more.")
    if args.learning_rate <= 0 or args.snr_gamma < 0 or not 0 < args.ema_max_decay < 1:
        raise ValueError(
            f"Got --learning_rate {args.learning_rate}, --snr_gamma {args.snr_gamma}, --ema_max_decay "
            f"{args.ema_max_decay}; expected a learning rate > 0, snr_gamma >= 0 and a decay in (0, 1)."
        )
    if args.timestep_log_snr_std <= 0:
        raise ValueError(f"--timestep_log_snr_std is {args.timestep_log_snr_std}; expected a value > 0.")


def _checkpoint_step(name: str) -> int | None:
    """N for a folder name `checkpoint-N`, else `None`."""
    prefix, _, step = name.partition("-")
    return int(step) if prefix == "checkpoint" and step.isdigit() else None


def find_checkpoints(output_dir: str) -> list[str]:
    """Complete checkpoints (`checkpoint-N` holding `training_state.json`) in `output_dir`, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    names = [
        name
        for name in os.listdir(output_dir)
        if _checkpoint_step(name) is not None and os.path.isfile(os.path.join(output_dir, name, CHECKPOINT_STATE_NAME))
    ]
    return [os.path.join(output_dir, name) for name in sorted(names, key=_checkpoint_step)]


def checkpoint_leftovers(output_dir: str) -> list[str]:
    r"""
    What killed saves and prunings leave in `output_dir`: `checkpoint-N.tmp` (a save that did not finish),
    `checkpoint-N.deleting` (a pruning that did not finish) and `checkpoint-N` without `training_state.json`.
    None of them can be resumed from.
    """
    if not os.path.isdir(output_dir):
        return []
    leftovers = []
    for name in sorted(os.listdir(output_dir)):
        stem, dot, suffix = name.partition(".")
        if _checkpoint_step(stem) is None or not os.path.isdir(os.path.join(output_dir, name)):
            continue
        if (dot and suffix in ("tmp", "deleting")) or (
            not dot and not os.path.isfile(os.path.join(output_dir, name, CHECKPOINT_STATE_NAME))
        ):
            leftovers.append(os.path.join(output_dir, name))
    return leftovers


def remove_checkpoint(path: str) -> None:
    """Delete a checkpoint folder: renamed to `<name>.deleting` first, so a kill mid-way leaves a named leftover."""
    deleting = path if path.endswith(".deleting") else path + ".deleting"
    if deleting != path:
        if os.path.exists(deleting):
            shutil.rmtree(deleting)
        os.replace(path, deleting)
    shutil.rmtree(deleting)


def prune_checkpoints(output_dir: str, limit: int | None) -> None:
    """Remove the complete checkpoints beyond the newest `limit` (all kept if `None`) and every leftover."""
    if limit is not None:
        for old in find_checkpoints(output_dir)[:-limit]:
            remove_checkpoint(old)
    for leftover in checkpoint_leftovers(output_dir):
        remove_checkpoint(leftover)


def checkpoint_problem(checkpoint: str) -> str | None:
    r"""
    Why `checkpoint` cannot be resumed from, or `None` when every file reads back: its `training_state.json` must
    hold an integer `global_step`, and each safetensors and pickle file (weights, optimizer, RNG states) must load.
    """
    try:
        with open(os.path.join(checkpoint, CHECKPOINT_STATE_NAME)) as f:
            state = json.load(f)
    except (OSError, ValueError) as error:
        return f"{CHECKPOINT_STATE_NAME}: {error}"
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return f"{CHECKPOINT_STATE_NAME} holds no integer global_step"
    for root, _, files in os.walk(checkpoint):
        for name in sorted(files):
            path = os.path.join(root, name)
            try:
                if name.endswith(".safetensors"):
                    load_file(path)
                elif name.endswith((".bin", ".pkl", ".pt", ".pth")):
                    torch.load(path, map_location="cpu", weights_only=False)
            except Exception as error:  # whatever a damaged file raises (EOFError, SafetensorError, ...)
                message = (str(error).splitlines() or [""])[0]
                return f"{os.path.relpath(path, checkpoint)}: {type(error).__name__} {message}".strip()
    return None


def latest_readable_checkpoint(output_dir: str) -> str | None:
    r"""
    The newest checkpoint of `output_dir` whose files all read back (`None` if there is no checkpoint), with a
    warning naming each newer one skipped; `ValueError` naming them when none reads back.
    """
    skipped = []
    for checkpoint in reversed(find_checkpoints(output_dir)):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            for bad, bad_problem in skipped:
                warnings.warn(
                    f"Checkpoint {bad} cannot be read back ({bad_problem}); resuming from {checkpoint} instead.",
                    stacklevel=2,
                )
            return checkpoint
        skipped.append((checkpoint, problem))
    if skipped:
        raise ValueError(
            "--resume_from_checkpoint latest: no checkpoint in --output_dir can be read back ("
            + "; ".join(f"{bad}: {problem}" for bad, problem in skipped)
            + "); expected at least one complete checkpoint, or a new --output_dir."
        )
    return None


def check_output_dir(args: argparse.Namespace) -> str | None:
    r"""
    Refuse an output folder that is not ours, and return the checkpoint to resume from (or `None`).

    An output folder must be new, empty, or written by this script (it holds `training_args.json`). A run that
    does not resume refuses a folder that holds checkpoints, so they are never overwritten. The checkpoint to resume
    from is read back in full first: with `latest`, a damaged newest checkpoint is skipped (with a warning) for the
    newest one that reads back.
    """
    output_dir = args.output_dir
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(f"--output_dir {output_dir!r} is a file; expected a folder.")
    parent = os.path.dirname(os.path.abspath(output_dir))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"--output_dir {output_dir!r} is inside {parent!r}, which is a file; expected a folder path.")
    ours = os.path.isfile(os.path.join(output_dir, TRAINING_ARGS_NAME))
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not ours:
        raise ValueError(
            f"--output_dir {output_dir!r} is not empty and was not written by this script (no {TRAINING_ARGS_NAME}); "
            "expected a new or empty folder, or the output folder of an earlier run."
        )
    checkpoints = find_checkpoints(output_dir)
    resume = args.resume_from_checkpoint
    if resume is None:
        if checkpoints:
            raise ValueError(
                f"--output_dir {output_dir!r} holds checkpoints ({os.path.basename(checkpoints[-1])} is the latest); "
                "pass --resume_from_checkpoint latest to continue, or choose a new --output_dir."
            )
        return None
    if resume == "latest":
        return latest_readable_checkpoint(output_dir)
    for candidate in (resume, os.path.join(output_dir, resume)):
        if os.path.isfile(os.path.join(candidate, CHECKPOINT_STATE_NAME)):
            problem = checkpoint_problem(candidate)
            if problem is not None:
                raise ValueError(
                    f"--resume_from_checkpoint {resume!r}: {candidate} cannot be read back ({problem}); expected a "
                    "complete checkpoint (an earlier one, or 'latest' for the newest one that reads back)."
                )
            return candidate
    raise ValueError(
        f"--resume_from_checkpoint {resume!r} is not a checkpoint (no {CHECKPOINT_STATE_NAME} in it or in "
        f"{os.path.join(output_dir, resume)!r}); expected 'latest' or a checkpoint-N folder."
    )


def resolve_text_encoder(args: argparse.Namespace, label_names: list[str]) -> None:
    r"""
    Settle `--text_encoder_name_or_path` (`"auto"`: the bundled MNIST-CLIP text tower when the classes are the digits
    0-9, a built encoder otherwise) and `--train_text_encoder` (default: train a built encoder, freeze a loaded one).
    """
    if args.pretrained_model_name_or_path is None and args.text_encoder_name_or_path == AUTO_TEXT_ENCODER:
        args.text_encoder_name_or_path = str(MNIST_CLIP) if label_names == DIGIT_LABELS else BUILD_TEXT_ENCODER
    if args.train_text_encoder is None:
        args.train_text_encoder = args.text_encoder_name_or_path == BUILD_TEXT_ENCODER


def load_text_encoder(name_or_path: str) -> tuple[CLIPTokenizer, CLIPTextModel]:
    """A CLIP tokenizer and text encoder from a folder or Hub id: its `tokenizer`/`text_encoder` subfolders or root."""
    errors = []
    for tokenizer_subfolder, encoder_subfolder in (("tokenizer", "text_encoder"), ("", "")):
        try:
            tokenizer = CLIPTokenizer.from_pretrained(name_or_path, subfolder=tokenizer_subfolder)
            # A whole CLIP model (MNIST-CLIP's folder) also holds a vision tower, whose weights are meant to be left
            # out: no load report listing them.
            verbosity = transformers_logging.get_verbosity()
            transformers_logging.set_verbosity_error()
            try:
                return tokenizer, CLIPTextModel.from_pretrained(name_or_path, subfolder=encoder_subfolder)
            finally:
                transformers_logging.set_verbosity(verbosity)
        except (OSError, ValueError) as error:
            errors.append(str(error).splitlines()[0])
    raise ValueError(
        f"--text_encoder_name_or_path {name_or_path!r} holds no CLIP tokenizer and text encoder (at its root or in "
        f"tokenizer/ and text_encoder/): {errors}"
    )


def build_models(
    args: argparse.Namespace, num_classes: int
) -> tuple[CLIPTokenizer, CLIPTextModel, MnistUNet2DConditionModel, MnistDDPMScheduler]:
    r"""
    The tokenizer, text encoder, UNet and noise scheduler to train: those of `--pretrained_model_name_or_path`, or
    built as the arguments describe.

    A built UNet is conditioned on the text (`cross_attention_dim` = the encoder's hidden size, the encoder loaded or
    built from the caption vocabulary) and on the class (`num_class_embeds = num_classes + 1`, the last id being the
    null class). A loaded pipeline must have a text encoder, that many class embeddings and the training resolution.
    """
    if args.pretrained_model_name_or_path:
        tokenizer, text_encoder, unet, scheduler = load_pretrained_models(args.pretrained_model_name_or_path)
        found = {"num_class_embeds": unet.config.num_class_embeds, "sample_size": unet.config.sample_size}
        expected = {"num_class_embeds": num_classes + 1, "sample_size": args.resolution}
        if found != expected:
            raise ValueError(
                f"--pretrained_model_name_or_path {args.pretrained_model_name_or_path!r} has a UNet with {found}; "
                f"expected {expected} for {num_classes} classes at --resolution {args.resolution}."
            )
    else:
        if args.text_encoder_name_or_path != BUILD_TEXT_ENCODER:
            tokenizer, text_encoder = load_text_encoder(args.text_encoder_name_or_path)
        else:
            tokenizer = build_caption_tokenizer()
            text_encoder = build_text_encoder(tokenizer, hidden_size=args.text_encoder_hidden_size)
        unet = MnistUNet2DConditionModel(
            sample_size=args.resolution,
            block_out_channels=args.block_out_channels,
            layers_per_block=args.layers_per_block,
            attention_levels=args.attention_levels,
            attention_head_dim=args.attention_head_dim,
            cross_attention_dim=text_encoder.config.hidden_size,
            num_class_embeds=num_classes + 1,
            norm_num_groups=min(8, min(args.block_out_channels)),
            patch_size=args.patch_size,
            upsample_type=args.upsample_type,
        )
        scheduler = MnistDDPMScheduler(prediction_type=args.prediction_type)
    text_encoder.requires_grad_(args.train_text_encoder)
    unet.requires_grad_(True)
    return tokenizer, text_encoder, unet, scheduler


def load_pretrained_models(
    name_or_path: str,
) -> tuple[CLIPTokenizer, CLIPTextModel, MnistUNet2DConditionModel, MnistDDPMScheduler]:
    """The components of a saved `MnistDiffusionPipeline` (folder or Hub id), its schedule as a training scheduler."""
    try:
        pipe = MnistDiffusionPipeline.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"--pretrained_model_name_or_path {name_or_path!r} could not be loaded as an MnistDiffusionPipeline "
            f"({str(error).splitlines()[0]}); expected a folder written by save_pretrained or train.py, or a Hub id."
        ) from None
    if pipe.text_encoder is None or pipe.tokenizer is None:
        raise ValueError(
            f"--pretrained_model_name_or_path {name_or_path!r} has no text encoder and tokenizer; expected a "
            "text-conditioned pipeline (training builds captions)."
        )
    scheduler = MnistDDPMScheduler.from_config(pipe.scheduler.config)
    return pipe.tokenizer, pipe.text_encoder, pipe.unet, scheduler


def log_validation(
    pipeline: MnistDiffusionPipeline, args: argparse.Namespace, accelerator: Accelerator, global_step: int
) -> dict[str, tuple[str, Image.Image]]:
    r"""
    Generate one grid per validation prompt and one grid of every class (a row per class), save them as PNG in
    `output_dir/validation/` and log them to TensorBoard.
    """
    pipeline.set_progress_bar_config(disable=True)
    n = args.validation_images_per_class
    call = dict(
        num_inference_steps=args.validation_inference_steps,
        guidance_scale=args.validation_guidance_scale,
        num_images_per_prompt=n,
    )
    grids = {}  # TensorBoard tag -> (file name, grid)
    if pipeline.num_classes:
        generator = torch.Generator().manual_seed(args.seed)
        images = pipeline(class_labels=list(range(pipeline.num_classes)), generator=generator, **call).images
        grids["validation/classes"] = ("classes", image_grid(images, pipeline.num_classes, n))
    if pipeline.text_encoder is not None:
        for i, prompt in enumerate(args.validation_prompts or []):
            generator = torch.Generator().manual_seed(args.seed)
            images = pipeline(prompt, generator=generator, **call).images
            grids[f"validation/prompt {i}: {prompt}"] = (f"prompt-{i}", image_grid(images, 1, n))
    folder = os.path.join(args.output_dir, "validation")
    os.makedirs(folder, exist_ok=True)
    for name, grid in grids.values():
        grid.save(os.path.join(folder, f"step-{global_step}_{name}.png"))
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            for tag, (_, grid) in grids.items():
                tracker.writer.add_image(tag, np.asarray(grid), global_step, dataformats="HW")
    return grids


class SampleEvaluator:
    r"""
    Scores samples of the pipeline being trained with [`mnist_diffusion.evaluation.evaluate`], the protocol of
    `mnist-diffusion evaluate`: `num_samples` samples spread evenly over the classes, sample `i` from the noise
    of seed `--seed + i` (independent of the batch size), asked for by class label and class prompt when the pipeline
    has both, `--validation_inference_steps` steps at `--validation_guidance_scale`.

    Args:
        classifier (`MnistClassifier`): Recognises the dataset's classes at the training resolution.
        reference ([`~mnist_diffusion.evaluation.ReferenceFeatures`]): The real reference images, embedded once.
        num_samples (`int`): Samples per evaluation, a multiple of the classes.
        args (`argparse.Namespace`): The training arguments (steps, guidance, seed, batch size).
    """

    def __init__(
        self, classifier: MnistClassifier, reference: ReferenceFeatures, num_samples: int, args: argparse.Namespace
    ):
        self.classifier = classifier
        self.reference = reference
        self.num_samples = num_samples
        self.sampling = dict(
            guidance_scale=args.validation_guidance_scale,
            num_inference_steps=args.validation_inference_steps,
            seed=args.seed,
            batch_size=args.train_batch_size,
        )

    def evaluate(self, pipeline: MnistDiffusionPipeline) -> dict:
        r"""
        Sample and score: `{"conditional_accuracy", "classifier_fid", "classifier_fid_floor", "per_class_accuracy",
        "num_samples", "num_reference_images", "conditioning"}`.
        """
        result = evaluate(
            pipeline,
            self.num_samples,
            classifier=self.classifier,
            reference=self.reference,
            style_samples_per_request=0,
            **self.sampling,
        )
        return {
            "conditional_accuracy": result.accuracy,
            "classifier_fid": result.classifier_fid,
            "classifier_fid_floor": result.classifier_fid_floor,
            "per_class_accuracy": result.accuracy_per_class,
            "num_samples": result.num_samples,
            "num_reference_images": len(self.reference.features),
            "conditioning": result.settings["conditioning"],
        }


def build_evaluator(args: argparse.Namespace, label_names: list[str], device: torch.device) -> SampleEvaluator:
    r"""
    Load `--eval_classifier`, check that it fits the data, and embed the real reference images (`--eval_split` of
    `--eval_dataset`) once; raises `ValueError` naming the flag for a folder without a classifier, a classifier for
    another resolution or number of classes, or a missing split.
    """
    try:
        classifier = MnistClassifier.from_pretrained(args.eval_classifier)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"--eval_classifier {args.eval_classifier!r} holds no MnistClassifier ({str(error).splitlines()[0]}); "
            "expected a folder written by `MnistClassifier.save_pretrained` such as "
            "mnist_diffusion/pretrained/mnist-classifier."
        ) from error
    config = classifier.config
    expected = (1, args.resolution, len(label_names))
    if (config.in_channels, config.sample_size, config.num_classes) != expected:
        raise ValueError(
            f"--eval_classifier {args.eval_classifier!r} classifies {config.in_channels}-channel "
            f"{config.sample_size}x{config.sample_size} images into {config.num_classes} classes; expected 1-channel "
            f"{args.resolution}x{args.resolution} images (--resolution) into {len(label_names)} classes (the "
            "dataset's)."
        )
    num_samples = args.eval_num_samples or 25 * len(label_names)
    if num_samples % len(label_names):
        raise ValueError(
            f"--eval_num_samples is {num_samples}; expected a multiple of the dataset's {len(label_names)} "
            "classes, so that every class gets as many samples."
        )
    eval_dataset = args.eval_dataset or args.dataset_name
    try:
        split = load_split(eval_dataset, args.dataset_config_name, args.eval_split, args.cache_dir)
    except ValueError as error:
        raise ValueError(f"--eval_dataset {eval_dataset!r}, --eval_split {args.eval_split!r}: {error}") from error
    reference = prepare_training_data(
        split, image_column=args.image_column, label_column=args.label_column, resolution=args.resolution
    )
    classifier.to(device)
    return SampleEvaluator(classifier, ReferenceFeatures.embed(classifier, reference.images), num_samples, args)


def log_evaluation(metrics: dict, args: argparse.Namespace, accelerator: Accelerator, global_step: int) -> None:
    r"""
    Log evaluation metrics to the trackers (`eval/conditional_accuracy`, `eval/classifier_fid`) and the console,
    and append them with the step as one JSON line to `output_dir/eval_history.jsonl`.
    """
    accelerator.log({f"eval/{key}": metrics[key] for key in ("conditional_accuracy", "classifier_fid")}, global_step)
    logger.info(
        f"Step {global_step}: conditional accuracy {metrics['conditional_accuracy']:.3f}, classifier FID "
        f"{metrics['classifier_fid']:.2f} ({metrics['num_samples']} samples)"
    )
    with open(os.path.join(args.output_dir, EVAL_HISTORY_NAME), "a") as f:
        f.write(json.dumps({"step": global_step, **metrics}) + "\n")


def save_checkpoint(accelerator: Accelerator, args: argparse.Namespace, global_step: int) -> str:
    r"""
    Save the full training state as `output_dir/checkpoint-{global_step}`, atomically.

    The state goes to `checkpoint-N.tmp` first, which becomes `checkpoint-N` (holding `training_state.json`) by a
    rename once complete, so a crash mid-write never leaves a broken latest checkpoint. Older checkpoints beyond
    `--checkpoints_total_limit` are removed only after the new one is complete (renamed `.deleting` first), and so
    are the leftovers of killed saves and prunings ([`checkpoint_leftovers`]).
    """
    final = os.path.join(args.output_dir, f"checkpoint-{global_step}")
    tmp = final + ".tmp"
    if accelerator.is_main_process and os.path.exists(tmp):
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with open(os.path.join(tmp, CHECKPOINT_STATE_NAME), "w") as f:
            json.dump({"global_step": global_step}, f)
        if os.path.exists(final):
            remove_checkpoint(final)
        os.replace(tmp, final)
        prune_checkpoints(args.output_dir, args.checkpoints_total_limit)
        logger.info(f"Saved state to {final}")
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, resume_path: str | None) -> int:
    """Restore the training state saved by [`save_checkpoint`] in `resume_path`; returns its step (0: no resume)."""
    if resume_path is None:
        return 0
    accelerator.print(f"Resuming from checkpoint {resume_path}")
    accelerator.load_state(resume_path)
    with open(os.path.join(resume_path, CHECKPOINT_STATE_NAME)) as f:
        return json.load(f)["global_step"]


def save_final_pipeline(pipeline: MnistDiffusionPipeline, output_dir: str) -> None:
    r"""
    Write `pipeline` into `output_dir` as checkpoints are written: complete first, then swapped in.

    The pipeline is saved whole to `output_dir/.pipeline.tmp`. Then the old `model_index.json` is removed (from here
    on the folder holds no loadable pipeline: `from_pretrained` refuses it), each component folder is replaced by
    its new version (the old one parked in `.pipeline.old`), and the new `model_index.json` is moved in last. A
    kill at any moment therefore leaves the old pipeline, the new one, or none that loads, never the new UNet beside
    the old text encoder; the next save (e.g. a resumed run) clears what a killed one left.
    """
    staging = os.path.join(output_dir, PIPELINE_STAGING_NAME)
    retired = os.path.join(output_dir, PIPELINE_RETIRED_NAME)
    for leftover in (staging, retired):
        if os.path.exists(leftover):
            shutil.rmtree(leftover)
    pipeline.save_pretrained(staging)
    index = os.path.join(output_dir, "model_index.json")
    if os.path.exists(index):
        os.remove(index)
    os.makedirs(retired)
    for name in sorted(os.listdir(staging)):
        if name == "model_index.json":
            continue
        target = os.path.join(output_dir, name)
        if os.path.exists(target):
            os.replace(target, os.path.join(retired, name))
        os.replace(os.path.join(staging, name), target)
    os.replace(os.path.join(staging, "model_index.json"), index)
    shutil.rmtree(retired)
    os.rmdir(staging)


def public_args(args: argparse.Namespace) -> dict:
    """The arguments as JSON values, without the Hub token."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(args).items() if k != "hub_token"}


def tracker_config(args: argparse.Namespace) -> dict:
    """The arguments as scalars and strings (what TensorBoard's hparams accept)."""
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in public_args(args).items()}


def write_training_args(args: argparse.Namespace) -> None:
    """Save the arguments as `training_args.json` in the output folder (also the marker that the folder is ours)."""
    with open(os.path.join(args.output_dir, TRAINING_ARGS_NAME), "w") as f:
        json.dump(public_args(args), f, indent=2)


def updates_per_epoch_of(args: argparse.Namespace, num_samples: int, accelerator: Accelerator) -> int:
    """Optimizer updates per epoch of `num_samples` (over all processes, with gradient accumulation)."""
    batches = math.ceil(num_samples / (args.train_batch_size * accelerator.num_processes))
    return math.ceil(batches / args.gradient_accumulation_steps)


def trained_named_params(
    args: argparse.Namespace, unet: torch.nn.Module, text_encoder: torch.nn.Module
) -> list[tuple[str, torch.nn.Parameter]]:
    """The UNet's parameters and, with `--train_text_encoder`, the text encoder's, named (Muon's split reads names)."""
    return list(unet.named_parameters(prefix="unet")) + (
        list(text_encoder.named_parameters(prefix="text_encoder")) if args.train_text_encoder else []
    )


def build_optimizer(
    args: argparse.Namespace,
    named_params: list[tuple[str, torch.nn.Parameter]],
    max_train_steps: int,
    accelerator: Accelerator,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """`--optimizer` over `named_params` and its lr schedule from the optimisation flags (stepped once per process)."""
    adam = dict(betas=(args.adam_beta1, args.adam_beta2), weight_decay=args.adam_weight_decay, eps=args.adam_epsilon)
    if args.optimizer == "muon":
        optimizer = MuonAdamW(split_muon_params(named_params), lr=args.learning_rate, **adam)
    else:
        optimizer = torch.optim.AdamW([param for _, param in named_params], lr=args.learning_rate, **adam)
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=max_train_steps * accelerator.num_processes,
    )
    return optimizer, lr_scheduler


def load_training_data(args: argparse.Namespace, resolution: int) -> ImageClassData:
    """`--dataset_name`'s `--train_split` (at most `--max_train_samples`), decoded once into uint8 tensors."""
    return prepare_training_data(
        load_split(args.dataset_name, args.dataset_config_name, args.train_split, args.cache_dir),
        image_column=args.image_column,
        label_column=args.label_column,
        caption_column=args.caption_column,
        resolution=resolution,
        max_train_samples=args.max_train_samples,
    )


def build_captioner(args: argparse.Namespace, data: ImageClassData, tokenizer: CLIPTokenizer) -> TrainingCaptioner:
    """Per-batch captions in `--caption_mode` (style words measured on the images once), with conditioning dropout."""
    style_words = None
    if args.caption_mode == "label+style" and data.captions is None:
        style_words = measure_style(data.images).words()
    return TrainingCaptioner(
        tokenizer,
        data.label_names,
        caption_mode=args.caption_mode,
        captions=data.captions,
        style_words=style_words,
        cond_dropout_prob=args.cond_dropout_prob,
        class_dropout_prob=args.class_dropout_prob,
    )


def build_accelerator(args: argparse.Namespace) -> Accelerator:
    """The `Accelerator` of a training script: accumulation, mixed precision, trackers logging in the output dir."""
    return Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, args.logging_dir)
        ),
    )


def build_dataloader(
    dataset: ImageClassDataset, args: argparse.Namespace, num_workers: int = 0
) -> torch.utils.data.DataLoader:
    """Batches of `--train_batch_size`, in an order reshuffled each epoch from `--seed` (resumable mid-epoch)."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=args.train_batch_size,
        sampler=EpochShuffleSampler(len(dataset), seed=args.seed),
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(args.seed),
    )


def run_training_loop(
    accelerator: Accelerator,
    args: argparse.Namespace,
    train_dataloader: torch.utils.data.DataLoader,
    trained: list[torch.nn.Module],
    params: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler,
    compute_loss: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    after_update: Callable[[], None],
    validate: Callable[[int], None],
    global_step: int,
    max_train_steps: int,
    updates_per_epoch: int,
    on_checkpoint: Callable[[str], None] | None = None,
) -> int:
    r"""
    The optimisation loop of `train.py` and `distill.py`, from `global_step` (a resumed run skips the batches its
    epoch already used) to `max_train_steps`; returns the last step.

    Each batch's loss comes from `compute_loss`; after every optimizer update `after_update` runs (an EMA step),
    then the progress bar and trackers get the loss, learning rate and images/s, a checkpoint is saved every
    `--checkpointing_steps` (and handed to `on_checkpoint`), and the main process calls `validate(step)` every
    `--validation_steps` and at the last step, the trained models going back to train mode after it.
    """
    first_epoch = global_step // updates_per_epoch
    batches_to_skip = (global_step % updates_per_epoch) * args.gradient_accumulation_steps
    num_epochs = math.ceil(max_train_steps / updates_per_epoch)
    total_batch_size = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    progress_bar = tqdm(
        range(max_train_steps), initial=global_step, desc="Steps", disable=not accelerator.is_local_main_process
    )
    start_time, start_step = time.perf_counter(), global_step
    for model in trained:
        model.train()
    for epoch in range(first_epoch, num_epochs):
        if global_step >= max_train_steps:
            break
        epoch_dataloader = train_dataloader
        if epoch == first_epoch and batches_to_skip:
            epoch_dataloader = accelerator.skip_first_batches(train_dataloader, batches_to_skip)
        epoch_dataloader.set_epoch(epoch)
        for batch in epoch_dataloader:
            with accelerator.accumulate(*trained):
                loss = compute_loss(batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)

            if not accelerator.sync_gradients:
                continue
            after_update()
            global_step += 1
            progress_bar.update(1)
            images_per_second = (global_step - start_step) * total_batch_size / (time.perf_counter() - start_time)
            logs = {"loss": loss.detach().item(), "lr": lr_scheduler.get_last_lr()[0], "img/s": images_per_second}
            progress_bar.set_postfix(
                loss=f"{logs['loss']:.4g}", lr=f"{logs['lr']:.2e}", img_s=f"{images_per_second:.0f}"
            )
            accelerator.log({f"train/{k}": v for k, v in logs.items()}, step=global_step)

            if args.checkpointing_steps and global_step % args.checkpointing_steps == 0:
                checkpoint_dir = save_checkpoint(accelerator, args, global_step)
                if on_checkpoint is not None:
                    on_checkpoint(checkpoint_dir)
            is_last = global_step >= max_train_steps
            if (
                accelerator.is_main_process
                and args.validation_steps
                and (global_step % args.validation_steps == 0 or is_last)
            ):
                validate(global_step)
                for model in trained:
                    model.train()
            if is_last:
                break
    return global_step


def main(args: argparse.Namespace) -> MnistDiffusionPipeline | None:
    r"""
    Train and save the pipeline in `args.output_dir`; returns it on the main process.

    Example:

    ```py
    >>> from training.train import main, parse_args

    >>> main(parse_args(["--dataset_name", "ylecun/mnist", "--output_dir", "out", "--max_train_steps", "100"]))
    ```
    """
    resume_path = check_output_dir(args)
    if args.push_to_hub:
        resolve_token(None)  # no token: fail now, not after training
    accelerator = build_accelerator(args)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    logger.info(accelerator.state, main_process_only=False)
    set_seed(args.seed)  # the same initial weights in every process

    # Data: decoded once into uint8 tensors; captions are built per batch from labels and measured style.
    data = load_training_data(args, args.resolution)
    resolve_text_encoder(args, data.label_names)
    evaluator = build_evaluator(args, data.label_names, accelerator.device) if args.eval_classifier else None
    dataset = ImageClassDataset(data)
    train_dataloader = build_dataloader(dataset, args, num_workers=args.dataloader_num_workers)

    tokenizer, text_encoder, unet, noise_scheduler = build_models(args, num_classes=len(data.label_names))
    captioner = build_captioner(args, data, tokenizer)
    set_seed(args.seed, device_specific=True)  # different noise, timesteps and dropout in each process
    named_params = trained_named_params(args, unet, text_encoder)
    params = [param for _, param in named_params]
    ema = (
        EMAModel(params, decay=args.ema_max_decay, use_ema_warmup=True, power=args.ema_power) if args.use_ema else None
    )
    updates_per_epoch = updates_per_epoch_of(args, len(dataset), accelerator)
    max_train_steps = args.max_train_steps or args.num_epochs * updates_per_epoch
    num_epochs = math.ceil(max_train_steps / updates_per_epoch)
    optimizer, lr_scheduler = build_optimizer(args, named_params, max_train_steps, accelerator)
    if args.train_text_encoder:
        unet, text_encoder, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(
            unet, text_encoder, optimizer, train_dataloader, lr_scheduler
        )
    else:
        unet, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(
            unet, optimizer, train_dataloader, lr_scheduler
        )
        text_encoder.to(accelerator.device)
    trained = [unet] + ([text_encoder] if args.train_text_encoder else [])
    if ema is not None:
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)

    # before training_args.json is rewritten: a failed resume leaves the run as it was
    global_step = load_checkpoint(accelerator, resume_path)

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        write_training_args(args)
        accelerator.init_trackers("mnist-diffusion", config=tracker_config(args))

    total_batch_size = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info("***** Running training *****")
    logger.info(f"  Num examples = {len(dataset)}, classes = {data.label_names}")
    logger.info(f"  Num epochs = {num_epochs}, total optimization steps = {max_train_steps}")
    logger.info(f"  Total batch size (parallel, distributed & accumulation) = {total_batch_size}")

    def after_update() -> None:
        if ema is not None:
            ema.step(params)

    def on_checkpoint(checkpoint_dir: str) -> None:
        if accelerator.is_main_process and args.push_to_hub and args.push_checkpoints:
            push_checkpoint(checkpoint_dir, hub_repo_id(args))

    def validate(step: int) -> None:
        with ema_weights(ema, params):
            pipe = build_pipeline(accelerator, unet, text_encoder, tokenizer, noise_scheduler, data.id2label)
            log_validation(pipe, args, accelerator, step)
            if evaluator is not None:
                log_evaluation(evaluator.evaluate(pipe), args, accelerator, step)

    run_training_loop(
        accelerator,
        args,
        train_dataloader,
        trained,
        params,
        optimizer,
        lr_scheduler,
        compute_loss=lambda batch: training_loss(
            batch, args, captioner, text_encoder, unet, noise_scheduler, accelerator
        ),
        after_update=after_update,
        validate=validate,
        on_checkpoint=on_checkpoint,
        global_step=global_step,
        max_train_steps=max_train_steps,
        updates_per_epoch=updates_per_epoch,
    )

    accelerator.wait_for_everyone()
    pipeline = None
    if accelerator.is_main_process:
        if ema is not None:
            ema.copy_to(params)
        pipeline = build_pipeline(accelerator, unet, text_encoder, tokenizer, noise_scheduler, data.id2label)
        save_final_pipeline(pipeline, args.output_dir)
        write_training_args(args)
        logger.info(f"Saved the pipeline to {args.output_dir}")
        if args.push_to_hub:
            push_pipeline_to_hub(args.output_dir, hub_repo_id(args))
    accelerator.end_training()
    return pipeline


def hub_repo_id(args: argparse.Namespace) -> str:
    """`--hub_model_id`, or the name of `--output_dir`."""
    return args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir))


@contextlib.contextmanager
def ema_weights(ema: EMAModel | None, params: list[torch.nn.Parameter]):
    """Within the block, `params` hold the EMA weights (when `ema` is given); the training weights come back after."""
    if ema is None:
        yield
        return
    ema.store(params)
    ema.copy_to(params)
    try:
        yield
    finally:
        ema.restore(params)


def build_pipeline(
    accelerator: Accelerator,
    unet: torch.nn.Module,
    text_encoder: torch.nn.Module,
    tokenizer: CLIPTokenizer,
    scheduler: MnistDDPMScheduler,
    id2label: dict[str, str],
) -> MnistDiffusionPipeline:
    """An eval-mode pipeline around the (unwrapped) models being trained."""
    unet = accelerator.unwrap_model(unet).eval()
    text_encoder = accelerator.unwrap_model(text_encoder).eval()
    return MnistDiffusionPipeline(
        unet=unet, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer, id2label=id2label
    )


def training_loss(
    batch: dict[str, torch.Tensor],
    args: argparse.Namespace,
    captioner: TrainingCaptioner,
    text_encoder: torch.nn.Module,
    unet: torch.nn.Module,
    noise_scheduler: MnistDDPMScheduler,
    accelerator: Accelerator,
) -> torch.Tensor:
    r"""
    The diffusion loss of one batch (Min-SNR weighted with `--snr_gamma`); `captioner` gives its captions with
    conditioning dropout (`--cond_dropout_prob`, `--class_dropout_prob`), tokenised.
    """
    pixel_values = batch["pixel_values"]
    bsz, device = pixel_values.shape[0], pixel_values.device
    conditioning = captioner(batch["labels"], batch["indices"])

    noise = torch.randn_like(pixel_values)
    timesteps = noise_scheduler.sample_training_timesteps(
        bsz, log_snr_mean=args.timestep_log_snr_mean, log_snr_std=args.timestep_log_snr_std, device=device
    )
    noisy = noise_scheduler.add_noise(pixel_values, noise, timesteps)
    target = noise_scheduler.training_target(pixel_values, noise, timesteps)
    with accelerator.autocast():
        encoder_hidden_states = text_encoder(conditioning.input_ids, attention_mask=conditioning.attention_mask)[0]
        model_pred = unet(
            noisy,
            timesteps,
            encoder_hidden_states=encoder_hidden_states,
            class_labels=conditioning.class_labels,
            encoder_attention_mask=conditioning.attention_mask,
        ).sample
    per_sample = F.mse_loss(model_pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    if args.snr_gamma:
        per_sample = per_sample * noise_scheduler.min_snr_loss_weights(timesteps, args.snr_gamma)
    return per_sample.mean()


def run(
    argv: list[str] | None = None,
    script: str = "train.py",
    parse: Callable[[list[str] | None], argparse.Namespace] | None = None,
    entry: Callable[[argparse.Namespace], object] | None = None,
) -> int:
    """
    A training script's entry point (this one's, or `distill.py`'s with its own `parse` and `entry`): a bad value or
    path prints one line naming it (exit status 2), as the CLI does.
    """
    parse, entry = parse or parse_args, entry or main
    try:
        entry(parse(argv))
    except (ValueError, OSError) as error:
        print(f"{script}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(run())
