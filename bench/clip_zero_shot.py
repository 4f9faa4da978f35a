"""Benchmark: zero-shot digit accuracy and style-attribute retrieval of a CLIP on the real MNIST test split."""

from __future__ import annotations

import argparse
import time

import torch

from mnist_diffusion.captions import SLANT_WORDS, THICKNESS_WORDS, caption_templates, measure_style
from mnist_diffusion.clip_model import ClipScorer
from mnist_diffusion.data import load_split, prepare_training_data

STYLE_ATTRIBUTES = {"thickness": THICKNESS_WORDS, "slant": SLANT_WORDS}


def style_retrieval_accuracy(
    scorer: ClipScorer, images: torch.Tensor, labels: torch.Tensor, label_names: list[str], words: tuple[str, ...]
) -> torch.Tensor:
    r"""
    Per image, the index of the style word whose caption ("a thick 7", "a regular 7", "a thin 7") matches best: the
    label is given, only the attribute word differs between the candidate captions.
    """
    predicted = torch.empty_like(labels)
    for label, name in enumerate(label_names):
        mask = labels == label
        if mask.any():
            predicted[mask] = scorer.classify(images[mask], [[f"a {word} {name}"] for word in words])
    return predicted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset_name", default="../shared/data/mnist", help="Hub id or local folder.")
    parser.add_argument("--split", default="test")
    parser.add_argument("--model", default=None, help="A CLIP folder or Hub id (default: the shipped MNIST-CLIP).")
    parser.add_argument("--max_samples", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the target laptop has 2 cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = prepare_training_data(load_split(args.dataset_name, split=args.split), max_train_samples=args.max_samples)
    images, labels = data.images.float() / 255, data.labels
    scorer = ClipScorer.from_pretrained(args.model)
    start = time.perf_counter()
    print(f"{args.model or 'shipped MNIST-CLIP'} on {args.dataset_name} [{args.split}], {len(labels)} images")

    templates = [caption_templates(name, "label") for name in data.label_names]
    predicted = scorer.classify(images, templates)
    accuracy = (predicted == labels).float().mean()
    print(f"zero-shot digit accuracy ({len(templates[-1])} prompts per class, e.g. {templates[-1]}): {accuracy:.2%}")
    per_class = {name: (predicted[labels == c] == c).float().mean() for c, name in enumerate(data.label_names)}
    print("  per class: " + ", ".join(f"{name}: {acc:.1%}" for name, acc in per_class.items()))

    buckets = measure_style(data.images).classes()
    for attribute, words in STYLE_ATTRIBUTES.items():
        truth = buckets[attribute]
        retrieved = style_retrieval_accuracy(scorer, images, labels, data.label_names, words)
        chance = torch.bincount(truth, minlength=len(words)).max().item() / len(truth)
        print(
            f"{attribute} retrieval ({'/'.join(words)}, 'a <word> <digit>'): "
            f"{(retrieved == truth).float().mean():.2%} (majority bucket {chance:.2%})"
        )
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
