"""`mnist-diffusion evaluate --cas N`: the Classification Accuracy Score of a model beside its evaluation."""

from __future__ import annotations

import argparse
import json
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..cas import ClassificationAccuracyScore
    from ..data import ImageClassData
    from ..pipelines import MnistDiffusionPipeline

#: The classifier updates on each side by default: those of the README's CAS row (docs/benchmarks.md).
DEFAULT_CAS_STEPS = 1500
#: What the report says about the images a CAS was measured on (keys of the generate-dataset settings file).
GENERATION_SETTINGS = ("model", "scheduler", "num_inference_steps", "guidance_scale", "conditioning", "seed")


@dataclass
class CasRequest:
    """A checked `--cas` request: the real training and test images and where the generated images go or are."""

    num_images: int
    num_steps: int
    real_train: ImageClassData
    real_test: ImageClassData
    dataset: Path | None
    generate_kwargs: dict


def add_cas_arguments(parser: argparse.ArgumentParser) -> None:
    """`--cas`, `--cas-steps` and `--cas-dataset` of `evaluate`."""
    parser.add_argument(
        "--cas",
        type=int,
        default=0,
        metavar="N",
        help="Also measure the CAS: the classifier recipe trained on N generated images (balanced over the classes) "
        "and on N real training images of --reference-dataset, both tested on --reference-split (default 0: skip).",
    )
    parser.add_argument(
        "--cas-steps",
        type=int,
        default=DEFAULT_CAS_STEPS,
        help=f"Classifier updates on each side of the CAS (default {DEFAULT_CAS_STEPS}).",
    )
    parser.add_argument(
        "--cas-dataset",
        metavar="DIR",
        help="Keep the CAS images in this generate-dataset folder (an unfinished one resumes; a finished one is "
        "scored as it is, whatever made it); default: a temporary folder.",
    )


def check_cas_flags(args: argparse.Namespace) -> None:
    """Refuse bad `--cas*` flags before anything is loaded."""
    from ..synthetic_dataset import check_output_folder

    if args.cas < 0:
        raise ValueError(f"--cas is {args.cas}; expected 0 (no CAS) or a number of images per side.")
    if not args.cas:
        if args.cas_dataset:
            raise ValueError(f"--cas-dataset {args.cas_dataset!r} holds the images of a CAS; expected --cas N too.")
        return
    if args.cas_steps < 1:
        raise ValueError(f"--cas-steps is {args.cas_steps}; expected at least 1 classifier update.")
    if args.reference_split == "train":
        raise ValueError(
            "--cas trains on the 'train' split of --reference-dataset; expected another --reference-split to test on."
        )
    if args.cas_dataset:
        try:
            check_output_folder(Path(args.cas_dataset))
        except ValueError as error:
            raise ValueError(f"--cas-dataset: {error}") from None


def finished_dataset_settings(folder: Path) -> dict | None:
    """The settings file of a finished generate-dataset `folder`; None when it is not finished."""
    from ..synthetic_dataset import SETTINGS_FILE, is_finished_dataset

    return json.loads((folder / SETTINGS_FILE).read_text()) if is_finished_dataset(folder) else None


def check_cas_request(
    args: argparse.Namespace, pipe: MnistDiffusionPipeline, real_test: ImageClassData, generate_kwargs: dict
) -> CasRequest:
    """Check `--cas` against the model and the real data before any sampling, and read the real training images."""
    from ..data import load_split, prepare_training_data
    from ..synthetic_dataset import check_output_folder, dataset_settings

    label_names = pipe.label_names
    if not label_names:
        raise ValueError("--cas labels each generated image with its class; expected a model with class labels.")
    if args.cas % len(label_names):
        raise ValueError(f"--cas is {args.cas}; expected a multiple of the {len(label_names)} classes of the model.")
    real_train = prepare_training_data(
        load_split(args.reference_dataset, None, "train"), resolution=pipe.unet.config.sample_size
    )
    where = f"--reference-dataset {args.reference_dataset!r}"
    if real_train.label_names != label_names:
        raise ValueError(f"{where} has the classes {real_train.label_names}; --cas expected {label_names}.")
    if args.cas > len(real_train.labels):
        raise ValueError(
            f"--cas is {args.cas}; expected at most the {len(real_train.labels)} images of {where} [train]."
        )
    dataset = Path(args.cas_dataset) if args.cas_dataset else None
    finished = finished_dataset_settings(dataset) if dataset else None
    if finished is not None:
        if finished["num_images"] < args.cas:
            raise ValueError(
                f"--cas is {args.cas}; expected at most the {finished['num_images']} images of --cas-dataset "
                f"{args.cas_dataset!r}."
            )
        if finished["label_names"] != label_names:
            raise ValueError(
                f"--cas-dataset {args.cas_dataset!r} has the classes {finished['label_names']}; expected "
                f"{label_names}."
            )
    elif dataset:
        settings = dataset_settings(pipe, args.cas, **{k: v for k, v in generate_kwargs.items() if k != "batch_size"})
        try:
            check_output_folder(dataset, settings)
        except ValueError as error:
            raise ValueError(f"--cas-dataset: {error}") from None
    return CasRequest(args.cas, args.cas_steps, real_train, real_test, dataset, generate_kwargs)


def measure_cas(pipe: MnistDiffusionPipeline, request: CasRequest) -> tuple[ClassificationAccuracyScore, dict]:
    """Generate (or read) the CAS images and train and test the classifier recipe on each side; the score and what
    the report says about the images."""
    from ..cas import classification_accuracy_score, read_or_generate_dataset

    temporary = tempfile.TemporaryDirectory(prefix="mnist-diffusion-cas-") if request.dataset is None else None
    with temporary or nullcontext() as temporary_folder:
        folder = request.dataset or Path(temporary_folder)
        synthetic = read_or_generate_dataset(
            pipe,
            folder,
            request.num_images,
            resolution=request.real_train.images.shape[-1],
            **request.generate_kwargs,
        )
        settings = finished_dataset_settings(folder)
    score = classification_accuracy_score(
        synthetic, request.real_train, request.real_test, num_steps=request.num_steps, num_images=request.num_images
    )
    images = {"dataset": str(request.dataset) if request.dataset else None}
    return score, {**images, **{key: settings[key] for key in GENERATION_SETTINGS}}
