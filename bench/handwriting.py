"""Benchmark: the demo's "Learn my style" on 20 drawn digits with the bundled release, through its handler."""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time

import numpy as np
import torch
from PIL import Image

from mnist_diffusion.demo.handwriting import DEMO_RECIPE, HandwritingHandlers
from mnist_diffusion.demo.models import DemoModels
from mnist_diffusion.demo.test_digits import load_test_digits


def as_drawing(digit: torch.Tensor, side: int = 280) -> dict:
    """A shipped test digit (`(1, 28, 28)` in [-1, 1]) as the sketchpad sends a drawing: an opaque RGBA canvas."""
    gray = Image.fromarray(np.uint8((digit[0].numpy() + 1) * 127.5)).resize((side, side), Image.Resampling.BILINEAR)
    return {"composite": np.asarray(gray.convert("RGBA")), "background": None, "layers": []}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2, help="torch's threads (the demo's launch sets 2).")
    parser.add_argument("--max_train_steps", type=int, default=None, help="Override the demo's training steps.")
    parser.add_argument("--repeats", type=int, default=1, help="Trainings in a row, each timed.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe = DEMO_RECIPE
    if args.max_train_steps is not None:
        recipe = dataclasses.replace(recipe, max_train_steps=args.max_train_steps)
    models = DemoModels()
    tab = HandwritingHandlers(models.pipes["DDPM"], tempfile.mkdtemp(prefix="bench-handwriting-"), recipe=recipe)
    images, labels = load_test_digits()  # two of each digit: the user's 20 drawings
    examples = []
    for image, label in zip(images, labels.tolist(), strict=True):
        examples, _, _ = tab.add_drawing(examples, as_drawing(image), tab.class_names[label])
    print(f"{len(examples)} drawings; recipe: {recipe.max_train_steps} steps, {recipe.num_class_images} prior images")
    for repeat in range(args.repeats):
        load_before = os.getloadavg()
        marks = {}
        start = time.perf_counter()

        def progress(value, desc=None, unit=None, marks=marks, start=start):
            if isinstance(value, tuple) and value[0] == 1:
                marks.setdefault("first step", time.perf_counter() - start)
            if value == 1:
                marks["trained"] = time.perf_counter() - start

        style, grid, download, summary, _ = tab.learn(examples, 1.0, progress=progress)
        total = time.perf_counter() - start
        restyle_start = time.perf_counter()
        tab.restyle(style, 0.5)
        restyle = time.perf_counter() - restyle_start
        load_after = os.getloadavg()
        print(
            f"run {repeat}: Learn my style {total:.1f} s (first training step at {marks['first step']:.1f} s, "
            f"training done at {marks['trained']:.1f} s, then grid and download); slider redraw {restyle:.2f} s; "
            f"load average before {load_before[0]:.2f} / after {load_after[0]:.2f} (1 min), "
            f"{load_before[1]:.2f} / {load_after[1]:.2f} (5 min); {os.cpu_count()} cores, {args.threads} threads"
        )


if __name__ == "__main__":
    main()
