"""Train the MnistClassifier that scores generated samples: `python training/train_classifier.py ...`."""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers.optimization import get_scheduler
from tqdm.auto import tqdm

from mnist_diffusion.classifier import MnistClassifier
from mnist_diffusion.data import load_split, prepare_training_data

RESULTS_NAME = "eval_results.json"


def parse_args(input_args: list[str] | None = None) -> argparse.Namespace:
    r"""
    Parse and validate the command line; a bad value raises `ValueError` naming it and what was expected.

    Example:

    ```py
    >>> from training.train_classifier import parse_args

    >>> parse_args(["--output_dir", "classifier"]).num_epochs
    4
    ```
    """
    parser = argparse.ArgumentParser(description=__doc__)
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
    parser.add_argument("--output_dir", default="mnist-classifier")
    parser.add_argument("--num_epochs", type=int, default=4)
    parser.add_argument("--train_batch_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=3e-3)
    parser.add_argument("--weight_decay", type=float, default=1e-4)
    parser.add_argument(
        "--augment", type=float, default=1.0, help="Strength of the random affine jitter; 0 turns it off."
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(input_args)
    for flag in ("num_epochs", "train_batch_size"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag} is {getattr(args, flag)}; expected a positive integer.")
    if args.learning_rate <= 0:
        raise ValueError(f"--learning_rate is {args.learning_rate}; expected a positive number.")
    if args.augment < 0:
        raise ValueError(f"--augment is {args.augment}; expected a value >= 0.")
    return args


def check_output_dir(output_dir: str) -> None:
    """Refuse a file, or a non-empty folder that does not hold a classifier this script wrote."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(f"--output_dir {output_dir!r} is a file; expected a folder.")
    if os.path.isdir(output_dir) and os.listdir(output_dir):
        if not os.path.isfile(os.path.join(output_dir, RESULTS_NAME)):
            raise ValueError(
                f"--output_dir {output_dir!r} is not empty and holds no classifier of ours (no {RESULTS_NAME}); "
                "choose an empty or new folder."
            )


def random_affine(images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    r"""
    Jitter a batch with small random rotations (up to 10 deg), scalings (up to 10%) and shifts (up to 2 px at 28x28).

    `strength` scales all three ranges; 0 returns the images unchanged. Handwriting varies in exactly these ways, so
    the classifier generalises to generated digits drawn a little off-centre or tilted.
    """
    if strength == 0:
        return images
    batch, size = images.shape[0], images.shape[-1]

    def uniform(limit: float) -> torch.Tensor:
        return (torch.rand(batch, generator=generator) * 2 - 1) * limit * strength

    angle, scale = uniform(math.radians(10)), 1 + uniform(0.1)
    shift = torch.stack([uniform(2 * 2 / size), uniform(2 * 2 / size)], dim=1)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], dim=1)
    theta = torch.cat([theta, shift[:, :, None]], dim=2).to(images)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, align_corners=False, padding_mode="zeros")


@torch.no_grad()
def accuracy(classifier: MnistClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of `classifier` on uint8 `images`."""
    predicted, _ = classifier.predict(images.float() / 255)
    return (predicted == labels).float().mean().item()


def main(args: argparse.Namespace) -> dict:
    r"""
    Train, evaluate on `--eval_split` after every epoch, and save the classifier and its `eval_results.json`.

    Example:

    ```py
    >>> from training.train_classifier import main, parse_args

    >>> main(parse_args(["--dataset_name", "ylecun/mnist", "--output_dir", "mnist-classifier"]))["eval_accuracy"]
    0.99...
    ```
    """
    check_output_dir(args.output_dir)
    common = {"image_column": args.image_column, "label_column": args.label_column}
    train = prepare_training_data(
        load_split(args.dataset_name, args.dataset_config_name, args.train_split),
        max_train_samples=args.max_train_samples,
        **common,
    )
    evaluation = prepare_training_data(
        load_split(args.dataset_name, args.dataset_config_name, args.eval_split),
        max_train_samples=args.max_eval_samples,
        **common,
    )
    accelerator = Accelerator()
    set_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    classifier = MnistClassifier(num_classes=len(train.label_names), id2label=train.id2label)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(train.labels) / args.train_batch_size)
    lr_scheduler = get_scheduler(
        "cosine",
        optimizer,
        num_warmup_steps=min(100, steps_per_epoch),
        num_training_steps=args.num_epochs * steps_per_epoch,
    )
    classifier, optimizer = accelerator.prepare(classifier, optimizer)
    start = time.perf_counter()
    history = []
    progress = tqdm(
        total=args.num_epochs * steps_per_epoch, desc="classifier", disable=not accelerator.is_main_process
    )
    for epoch in range(args.num_epochs):
        classifier.train()
        order = torch.randperm(len(train.labels), generator=generator)
        for indices in order.split(args.train_batch_size):
            images = random_affine(train.images[indices].float() / 255, args.augment, generator)
            loss = F.cross_entropy(
                classifier(images.to(accelerator.device)), train.labels[indices].to(accelerator.device)
            )
            accelerator.backward(loss)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            progress.update()
            progress.set_postfix(loss=f"{loss.item():.4f}", epoch=epoch)
        history.append(accuracy(accelerator.unwrap_model(classifier), evaluation.images, evaluation.labels))
        accelerator.print(f"epoch {epoch}: {args.eval_split} accuracy {history[-1]:.4%}")
    progress.close()
    results = {
        "eval_accuracy": history[-1],
        "eval_accuracy_per_epoch": history,
        "eval_split": args.eval_split,
        "eval_samples": len(evaluation.labels),
        "dataset_name": args.dataset_name,
        "train_samples": len(train.labels),
        "training_seconds": round(time.perf_counter() - start, 1),
        "args": vars(args),
    }
    if accelerator.is_main_process:
        accelerator.unwrap_model(classifier).save_pretrained(args.output_dir)
        with open(os.path.join(args.output_dir, RESULTS_NAME), "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main(parse_args())
