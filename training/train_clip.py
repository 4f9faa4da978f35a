"""Train the MNIST-CLIP that scores image-prompt agreement: `python training/train_clip.py ...`."""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers.optimization import get_scheduler
from tqdm.auto import tqdm

from mnist_diffusion.captions import CAPTION_MODES, build_captions, caption_templates, measure_style
from mnist_diffusion.clip_model import ClipScorer, build_clip_model, build_clip_processor
from mnist_diffusion.data import load_split, prepare_training_data
from mnist_diffusion.text_encoding import build_caption_tokenizer

RESULTS_NAME = "eval_results.json"


def parse_args(input_args: list[str] | None = None) -> argparse.Namespace:
    r"""
    Parse and validate the command line; a bad value raises `ValueError` naming it and what was expected.

    Example:

    ```py
    >>> from training.train_clip import parse_args

    >>> parse_args(["--output_dir", "mnist-clip"]).caption_mode
    'label+style'
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
    parser.add_argument(
        "--caption_mode",
        default="label+style",
        help=f"One of {list(CAPTION_MODES)}: captions name the label, or the label and measured style words.",
    )
    parser.add_argument("--output_dir", default="mnist-clip")
    parser.add_argument("--num_epochs", type=int, default=5)
    parser.add_argument("--train_batch_size", type=int, default=256)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--weight_decay", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(input_args)
    for flag in ("num_epochs", "train_batch_size"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag} is {getattr(args, flag)}; expected a positive integer.")
    if args.learning_rate <= 0:
        raise ValueError(f"--learning_rate is {args.learning_rate}; expected a positive number.")
    if args.caption_mode not in CAPTION_MODES:
        raise ValueError(f"--caption_mode is {args.caption_mode!r}; expected one of {list(CAPTION_MODES)}.")
    return args


def check_output_dir(output_dir: str) -> None:
    """Refuse a file, or a non-empty folder that does not hold a CLIP this script wrote."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(f"--output_dir {output_dir!r} is a file; expected a folder.")
    if os.path.isdir(output_dir) and os.listdir(output_dir):
        if not os.path.isfile(os.path.join(output_dir, RESULTS_NAME)):
            raise ValueError(
                f"--output_dir {output_dir!r} is not empty and holds no CLIP of ours (no {RESULTS_NAME}); "
                "choose an empty or new folder."
            )


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
    >>> from training.train_clip import main, parse_args

    >>> main(parse_args(["--dataset_name", "ylecun/mnist", "--output_dir", "mnist-clip"]))["eval_zero_shot_accuracy"]
    0.98...
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
    style_words = measure_style(train.images).words() if args.caption_mode == "label+style" else None
    accelerator = Accelerator()
    set_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    tokenizer = build_caption_tokenizer()
    processor = build_clip_processor(tokenizer, image_size=train.images.shape[-1])
    model = build_clip_model(tokenizer, image_size=train.images.shape[-1])
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(train.labels) / args.train_batch_size)
    lr_scheduler = get_scheduler(
        "cosine",
        optimizer,
        num_warmup_steps=min(200, steps_per_epoch),
        num_training_steps=args.num_epochs * steps_per_epoch,
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    scorer = ClipScorer(accelerator.unwrap_model(model), processor)
    start = time.perf_counter()
    history = []
    progress = tqdm(total=args.num_epochs * steps_per_epoch, desc="clip", disable=not accelerator.is_main_process)
    for epoch in range(args.num_epochs):
        model.train()
        order = torch.randperm(len(train.labels), generator=generator)
        for indices in order.split(args.train_batch_size):
            labels = train.labels[indices]
            phrasings = torch.randint(0, 1 << 16, (len(indices),), generator=generator)
            words = [style_words[i] for i in indices.tolist()] if style_words else None
            texts = build_captions(train.label_names, labels, args.caption_mode, phrasings, words)
            tokens = tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt")
            pixel_values = scorer.preprocess(train.images[indices].float() / 255)
            loss = model(
                input_ids=tokens.input_ids.to(accelerator.device),
                attention_mask=tokens.attention_mask.to(accelerator.device),
                pixel_values=pixel_values.to(accelerator.device),
                return_loss=True,
            ).loss
            accelerator.backward(loss)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            progress.update()
            progress.set_postfix(loss=f"{loss.item():.4f}", epoch=epoch)
        model.eval()
        history.append(zero_shot_accuracy(scorer, evaluation.images, evaluation.labels, evaluation.label_names))
        accelerator.print(f"epoch {epoch}: {args.eval_split} zero-shot accuracy {history[-1]:.4%}")
    progress.close()
    results = {
        "eval_zero_shot_accuracy": history[-1],
        "eval_zero_shot_accuracy_per_epoch": history,
        "eval_split": args.eval_split,
        "eval_samples": len(evaluation.labels),
        "dataset_name": args.dataset_name,
        "train_samples": len(train.labels),
        "training_seconds": round(time.perf_counter() - start, 1),
        "args": vars(args),
    }
    if accelerator.is_main_process:
        scorer.save_pretrained(args.output_dir)
        with open(os.path.join(args.output_dir, RESULTS_NAME), "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main(parse_args())
