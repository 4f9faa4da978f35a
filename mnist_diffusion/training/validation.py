"""What a training run does at its validation steps: sample grids of every class and prompt, and score samples."""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from PIL import Image

from ..classifier import MnistClassifier
from ..data import load_split, prepare_training_data
from ..evaluation import ReferenceFeatures, evaluate
from ..image_grid import image_grid
from ..pipelines import MnistDiffusionPipeline
from .run_folder import EVAL_HISTORY_FILE

logger = get_logger(__name__)


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
    with open(os.path.join(args.output_dir, EVAL_HISTORY_FILE), "a") as f:
        f.write(json.dumps({"step": global_step, **metrics}) + "\n")
