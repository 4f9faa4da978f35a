"""Train the MNIST-CLIP that scores image-prompt agreement: `python training/train_clip.py ...`."""

from __future__ import annotations

import argparse
import math
import time

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from mnist_diffusion.captions import CAPTION_MODES, build_captions, caption_templates, measure_style
from mnist_diffusion.clip_model import ClipScorer, build_clip_model, build_clip_processor
from mnist_diffusion.text_encoding import build_caption_tokenizer
from mnist_diffusion.training.loop import run_training_loop
from mnist_diffusion.training.optimization import build_optimizer
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
    >>> from training.train_clip import parse_args  # run from the repository root

    >>> parse_args(["--output_dir", "mnist-clip"]).caption_mode
    'label+style'
    ```
    """
    parser = argparse.ArgumentParser(description=__doc__)
    add_scoring_model_arguments(
        parser, output_dir="mnist-clip", num_epochs=5, train_batch_size=256, learning_rate=1e-3, weight_decay=0.05
    )
    parser.add_argument(
        "--caption_mode",
        default="label+style",
        help=f"One of {list(CAPTION_MODES)}: captions name the label, or the label and measured style words.",
    )
    args = parser.parse_args(input_args)
    validate_scoring_model_args(args)
    if args.caption_mode not in CAPTION_MODES:
        raise ValueError(f"--caption_mode is {args.caption_mode!r}; expected one of {list(CAPTION_MODES)}.")
    return args


def zero_shot_accuracy(
    scorer: ClipScorer, images: torch.Tensor, labels: torch.Tensor, label_names: list[str]
) -> float:
    """Zero-shot top-1 accuracy on uint8 `images`, each class prompted with its "label" caption phrasings."""
    prompts = [caption_templates(name, "label") for name in label_names]
    return (scorer.classify(images.float() / 255, prompts) == labels).float().mean().item()


def main(args: argparse.Namespace) -> dict:
    r"""
    Train contrastively on images and generated captions, evaluate zero-shot accuracy on `--eval_split` after every
    epoch, and save the model, the processor (with the tokenizer) and `eval_results.json`.

    Every step captions each image afresh from its label (and, in `label+style` mode, its measured style) with a
    random phrasing; the loss is CLIP's symmetric InfoNCE (`CLIPModel(..., return_loss=True)`).

    Example:

    ```py
    >>> main(parse_args(["--dataset_name", "ylecun/mnist", "--output_dir", "mnist-clip"]))["eval_zero_shot_accuracy"]
    0.98...
    ```
    """
    # 1. Check the output folder, decode the splits, measure the style words of the training images once.
    train, evaluation = prepare_scoring_run(args, "CLIP")
    style_words = measure_style(train.images).words() if args.caption_mode == "label+style" else None

    # 2. The model, its processor and tokenizer, AdamW with a cosine schedule.
    accelerator = Accelerator()
    set_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    tokenizer = build_caption_tokenizer()
    processor = build_clip_processor(tokenizer, image_size=train.images.shape[-1])
    model = build_clip_model(tokenizer, image_size=train.images.shape[-1])
    steps_per_epoch = math.ceil(len(train.labels) / args.train_batch_size)
    optimizer, lr_scheduler = build_optimizer(
        list(model.named_parameters()),
        learning_rate=args.learning_rate,
        num_training_steps=args.num_epochs * steps_per_epoch,
        num_warmup_steps=min(200, steps_per_epoch),
        weight_decay=args.weight_decay,
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    scorer = ClipScorer(accelerator.unwrap_model(model), processor)

    # 3. Train on freshly captioned batches, scoring zero-shot accuracy after every epoch.
    def compute_loss(indices: torch.Tensor) -> torch.Tensor:
        phrasings = torch.randint(0, 1 << 16, (len(indices),), generator=generator)
        words = [style_words[i] for i in indices.tolist()] if style_words else None
        texts = build_captions(train.label_names, train.labels[indices], args.caption_mode, phrasings, words)
        tokens = tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt")
        pixel_values = scorer.preprocess(train.images[indices].float() / 255)
        return model(
            input_ids=tokens.input_ids.to(accelerator.device),
            attention_mask=tokens.attention_mask.to(accelerator.device),
            pixel_values=pixel_values.to(accelerator.device),
            return_loss=True,
        ).loss

    history = []

    def end_of_epoch(epoch: int) -> None:
        model.eval()
        history.append(zero_shot_accuracy(scorer, evaluation.images, evaluation.labels, evaluation.label_names))
        accelerator.print(f"epoch {epoch}: {args.eval_split} zero-shot accuracy {history[-1]:.4%}")

    start = time.perf_counter()
    run_training_loop(
        accelerator,
        [model],
        optimizer,
        lr_scheduler,
        lambda epoch: torch.randperm(len(train.labels), generator=generator).split(args.train_batch_size),
        compute_loss,
        max_train_steps=args.num_epochs * steps_per_epoch,
        updates_per_epoch=steps_per_epoch,
        images_per_update=args.train_batch_size,
        end_of_epoch=end_of_epoch,
        description="clip",
    )

    # 4. Save the model with its processor, and the results.
    return finish_scoring_run(accelerator, args, scorer, "eval_zero_shot_accuracy", history, train, evaluation, start)


if __name__ == "__main__":
    main(parse_args())
