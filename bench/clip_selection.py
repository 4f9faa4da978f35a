"""Benchmark: what CLIP-guided best-of-N buys: top-k by CLIP score vs k random picks from the same candidates."""

from __future__ import annotations

import argparse
import time

import torch

from mnist_diffusion.captions import caption_templates
from mnist_diffusion.classifier import MnistClassifier
from mnist_diffusion.clip_model import ClipScorer
from mnist_diffusion.loading import SCHEDULERS, open_pipeline
from mnist_diffusion.metrics import conditional_accuracy
from mnist_diffusion.pretrained import MNIST_CLASSIFIER
from mnist_diffusion.selection import select_best

COLUMNS = ("CLIP top-k", "CLIP random", "CLIP all", "acc top-k", "acc random", "acc all")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None, help="A saved pipeline (default: the shipped DIFFUSION_MODEL).")
    parser.add_argument("--clip_model", default=None, help="A CLIP folder or Hub id (default: the shipped one).")
    parser.add_argument("--num_candidates", type=int, default=10)
    parser.add_argument("--keep", type=int, default=3)
    parser.add_argument("--draws", type=int, default=3, help="Best-of-N draws per digit (different seeds).")
    parser.add_argument("--class_conditioned", action="store_true", help="Also pass the digit as class label.")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance_scale", type=float, default=3.0)
    parser.add_argument("--scheduler", choices=sorted(SCHEDULERS), default="dpm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the target laptop has 2 cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pipe = open_pipeline(args.model, args.scheduler)
    pipe.set_progress_bar_config(disable=True)
    scorer = ClipScorer.from_pretrained(args.clip_model)
    classifier = MnistClassifier.from_pretrained(MNIST_CLASSIFIER)
    picker = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    rows = {}
    for digit in range(pipe.num_classes):
        name = pipe.config.id2label[str(digit)]
        prompt = caption_templates(name, "label")[2]  # "a handwritten 7"
        kept, picked, scores_kept, scores_random, scores_all, all_images = [], [], [], [], [], []
        for draw in range(args.draws):
            selection = select_best(
                pipe,
                scorer,
                prompt=prompt,
                class_labels=digit if args.class_conditioned else None,
                num_candidates=args.num_candidates,
                keep=args.keep,
                generator=torch.Generator().manual_seed(args.seed + 1000 * digit + draw),
                num_inference_steps=args.steps,
                guidance_scale=args.guidance_scale,
            )
            pick = torch.randperm(args.num_candidates, generator=picker)[: args.keep]
            kept.append(selection.images)
            picked.append(selection.candidates[pick])
            all_images.append(selection.candidates)
            scores_kept.append(selection.scores)
            scores_random.append(selection.candidate_scores[pick])
            scores_all.append(selection.candidate_scores)
        # One row per prompt: mean CLIP score, then conditional accuracy, of the kept, random and all candidates.
        row = [torch.cat(scores).mean().item() for scores in (scores_kept, scores_random, scores_all)]
        for images in (kept, picked, all_images):
            predicted, _ = classifier.predict(torch.cat(images))
            row.append(conditional_accuracy(predicted, torch.full_like(predicted, digit)).overall)
        rows[prompt] = row

    print(
        f"model {args.model or 'shipped DIFFUSION_MODEL'}, CLIP {args.clip_model or 'shipped MNIST-CLIP'}: "
        f"top {args.keep} of {args.num_candidates} candidates vs {args.keep} random ones, {args.draws} draws per "
        f"prompt, {args.steps} {args.scheduler} steps, guidance {args.guidance_scale}, "
        f"class label {'on' if args.class_conditioned else 'off'}"
    )
    header = f"{'prompt':<18}" + "".join(f"{column:>12}" for column in COLUMNS)
    print(header + "\n" + "-" * len(header))
    rows["mean"] = [sum(column) / len(rows) for column in zip(*rows.values(), strict=True)]
    for prompt, row in rows.items():
        if prompt == "mean":
            print("-" * len(header))
        print(f"{prompt:<18}" + "".join(f"{v:>12.2f}" for v in row[:3]) + "".join(f"{v:>12.1%}" for v in row[3:]))
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
