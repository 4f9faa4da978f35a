"""What the scripts that train the scoring models (classifier, MNIST-CLIP) share: flags, splits, results file."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from ..data import ImageClassData, load_split, prepare_training_data
from .run_folder import EVAL_RESULTS_FILE, check_output_dir, write_eval_results

if TYPE_CHECKING:
    from accelerate import Accelerator
    from diffusers import ModelMixin
    from transformers import PreTrainedModel

    from ..clip_model import ClipScorer


def add_scoring_model_arguments(
    parser: argparse.ArgumentParser,
    output_dir: str,
    num_epochs: int,
    train_batch_size: int,
    learning_rate: float,
    weight_decay: float,
) -> None:
    """The data, output and optimisation flags of a scoring model's script, with that model's defaults."""
    parser.add_argument(
        "--dataset_name", default="ylecun/mnist", help="Hub id or local folder (see training/train.py)."
    )
    parser.add_argument("--dataset_config_name", default=None)
    parser.add_argument("--train_split", default="train")
    parser.add_argument("--eval_split", default="test")
    parser.add_argument("--image_column", default="image")
    parser.add_argument("--label_column", default="label")
    parser.add_argument("--max_train_samples", type=int, default=None)
    parser.add_argument("--max_eval_samples", type=int, default=None)
    parser.add_argument("--output_dir", default=output_dir)
    parser.add_argument("--num_epochs", type=int, default=num_epochs)
    parser.add_argument("--train_batch_size", type=int, default=train_batch_size)
    parser.add_argument("--learning_rate", type=float, default=learning_rate)
    parser.add_argument("--weight_decay", type=float, default=weight_decay)
    parser.add_argument("--seed", type=int, default=0)


def validate_scoring_model_args(args: argparse.Namespace) -> None:
    """Positive epochs and batch size, a positive learning rate; `ValueError` names the flag."""
    for flag in ("num_epochs", "train_batch_size"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag} is {getattr(args, flag)}; expected a positive integer.")
    if args.learning_rate <= 0:
        raise ValueError(f"--learning_rate is {args.learning_rate}; expected a positive number.")


def prepare_scoring_run(args: argparse.Namespace, model_name: str) -> tuple[ImageClassData, ImageClassData]:
    r"""
    Check `--output_dir` (new, empty, or holding `eval_results.json` of an earlier run; else refused as holding no
    `model_name` of ours), then decode `--train_split` and `--eval_split` (at most `--max_train_samples` and
    `--max_eval_samples`).
    """
    check_output_dir(args.output_dir, marker=EVAL_RESULTS_FILE, refusal=f"holds no {model_name} of ours")
    columns = {"image_column": args.image_column, "label_column": args.label_column}
    train = prepare_training_data(
        load_split(args.dataset_name, args.dataset_config_name, args.train_split),
        max_train_samples=args.max_train_samples,
        **columns,
    )
    evaluation = prepare_training_data(
        load_split(args.dataset_name, args.dataset_config_name, args.eval_split),
        max_train_samples=args.max_eval_samples,
        **columns,
    )
    return train, evaluation


def finish_scoring_run(
    accelerator: Accelerator,
    args: argparse.Namespace,
    model: ModelMixin | PreTrainedModel | ClipScorer,
    metric: str,
    history: list[float],
    train: ImageClassData,
    evaluation: ImageClassData,
    start_time: float,
) -> dict:
    r"""
    Save the trained `model` in `--output_dir` with `eval_results.json` (from the main process), and return those
    results: `metric` after the last epoch and per epoch, the splits, the training time and the arguments.
    """
    results = {
        metric: history[-1],
        f"{metric}_per_epoch": history,
        "eval_split": args.eval_split,
        "eval_samples": len(evaluation.labels),
        "dataset_name": args.dataset_name,
        "train_samples": len(train.labels),
        "training_seconds": round(time.perf_counter() - start_time, 1),
        "args": vars(args),
    }
    if accelerator.is_main_process:
        model.save_pretrained(args.output_dir)
        write_eval_results(args.output_dir, results)
    return results
