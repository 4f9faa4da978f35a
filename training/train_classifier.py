"""Train the MnistClassifier that scores generated samples: `python training/train_classifier.py ...`."""

from __future__ import annotations

import argparse
import time

from accelerate import Accelerator

from mnist_diffusion.classifier import MnistClassifier
from mnist_diffusion.training.classifier import accuracy, train_classifier
from mnist_diffusion.training.scoring_models import (
    add_scoring_model_arguments,
    finish_scoring_run,
    prepare_scoring_run,
    validate_scoring_model_args,
)


def parse_args(input_args: list[str] | None = None) -> argparse.Namespace:
    r"""
    Parse and validate the command line; a bad value raises `ValueError` naming it and what was expected.

    Example:

    ```py
    >>> from training.train_classifier import parse_args  # run from the repository root

    >>> parse_args(["--output_dir", "classifier"]).num_epochs
    4
    ```
    """
    parser = argparse.ArgumentParser(description=__doc__)
    add_scoring_model_arguments(
        parser,
        output_dir="mnist-classifier",
        num_epochs=4,
        train_batch_size=128,
        learning_rate=3e-3,
        weight_decay=1e-4,
    )
    parser.add_argument(
        "--augment", type=float, default=1.0, help="Strength of the random affine jitter; 0 turns it off."
    )
    args = parser.parse_args(input_args)
    validate_scoring_model_args(args)
    if args.augment < 0:
        raise ValueError(f"--augment is {args.augment}; expected a value >= 0.")
    return args


def main(args: argparse.Namespace) -> dict:
    r"""
    Train, evaluate on `--eval_split` after every epoch, and save the classifier and its `eval_results.json`.

    Example:

    ```py
    >>> main(parse_args(["--dataset_name", "ylecun/mnist", "--output_dir", "mnist-classifier"]))["eval_accuracy"]
    0.99...
    ```
    """
    # 1. Check the output folder, then decode the train and evaluation splits.
    train, evaluation = prepare_scoring_run(args, "classifier")

    # 2. Train (mnist_diffusion.training.classifier's recipe), scoring the evaluation split after every epoch.
    accelerator = Accelerator()
    history = []

    def evaluate(epoch: int, classifier: MnistClassifier) -> None:
        history.append(accuracy(classifier, evaluation.images, evaluation.labels))
        accelerator.print(f"epoch {epoch}: {args.eval_split} accuracy {history[-1]:.4%}")

    start = time.perf_counter()
    classifier = train_classifier(
        train,
        num_epochs=args.num_epochs,
        batch_size=args.train_batch_size,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        augment=args.augment,
        seed=args.seed,
        end_of_epoch=evaluate,
        accelerator=accelerator,
    )

    # 3. Save the classifier and its results.
    return finish_scoring_run(accelerator, args, classifier, "eval_accuracy", history, train, evaluation, start)


if __name__ == "__main__":
    main(parse_args())
