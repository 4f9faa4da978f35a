"""Benchmark: LoRA fine-tuning (train_lora.py defaults) on two styles the base model never saw, K images per digit."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from mnist_diffusion import MnistDiffusionPipeline, MnistImg2ImgPipeline
from mnist_diffusion.data import ImageClassData, load_split, prepare_training_data
from mnist_diffusion.loading import scheduler_from_config
from mnist_diffusion.pretrained import DIFFUSION_MODEL
from mnist_diffusion.training.classifier import train_classifier

STYLES = ("font", "dots")
TRAIN_LORA = Path(__file__).resolve().parents[1] / "training" / "train_lora.py"
#: Strength of the light pass through the base model (img2img) that part of the scorers' training images get.
CHANNEL_STRENGTH = 0.2


def font_digits(labels: list[int], seed: int) -> torch.Tensor:
    """Digits typeset in Pillow's bundled font (upright, uniform strokes), jittered in size, position and slant."""
    generator = np.random.default_rng(seed)
    images = []
    for label in labels:
        size = int(generator.integers(44, 52))
        font = ImageFont.load_default(size=size)
        canvas = Image.new("L", (56, 56), 0)
        draw = ImageDraw.Draw(canvas)
        left, top, right, bottom = draw.textbbox((0, 0), str(label), font=font)
        x = (56 - (right - left)) / 2 - left + generator.uniform(-2, 2)
        y = (56 - (bottom - top)) / 2 - top + generator.uniform(-2, 2)
        draw.text((x, y), str(label), fill=255, font=font, stroke_width=1, stroke_fill=255)
        canvas = canvas.rotate(float(generator.uniform(-6, 6)), resample=Image.BILINEAR)
        images.append(np.asarray(canvas.resize((28, 28), Image.BOX)))
    return torch.from_numpy(np.stack(images))[:, None]


def dotted(images: torch.Tensor) -> torch.Tensor:
    """MNIST strokes re-inked as a grid of dots (one 2x2 dot every 4 pixels): a texture MNIST never has."""
    on = torch.arange(28) % 4 < 2
    mask = (on[:, None] & on[None, :]).float()
    return (images.float() * mask).round().to(torch.uint8)


def stroke_shapes(images: torch.Tensor) -> torch.Tensor:
    r"""
    uint8 `images` redrawn as their shapes alone: thresholded at half, thinned to one-pixel skeletons (Zhang and Suen,
    1984) and drawn back with one stroke width. A style scorer that reads these judges the digits' shapes (a typeface's
    upright, regular glyphs against handwriting), not how thick or how smooth the strokes were rendered.
    """
    ink = (images >= 128)[:, 0]
    height, width = ink.shape[-2:]
    while True:
        changed = False
        for sub_iteration in (0, 1):
            padded = F.pad(ink.to(torch.uint8), (1, 1, 1, 1))
            # The eight neighbours clockwise from north: P2 ... P9 in Zhang and Suen's naming.
            ring = [
                padded[:, 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
                for dy, dx in ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))
            ]
            north, _, east, _, south, _, west, _ = ring
            crossings = sum((ring[i] == 0) & (ring[(i + 1) % 8] == 1) for i in range(8))
            count = sum(ring)
            if sub_iteration == 0:
                corner = (north * east * south == 0) & (east * south * west == 0)
            else:
                corner = (north * east * west == 0) & (north * south * west == 0)
            removable = ink & (count >= 2) & (count <= 6) & (crossings == 1) & corner
            if removable.any():
                ink, changed = ink & ~removable, True
        if not changed:
            return (F.max_pool2d(ink[:, None].float(), 3, stride=1, padding=1) * 255).to(torch.uint8)


def style_images(style: str, labels: list[int], seed: int, mnist: ImageClassData) -> torch.Tensor:
    """uint8 `(n, 1, 28, 28)` white-on-black images of `labels` in `style`."""
    if style == "font":
        return font_digits(labels, seed)
    generator = torch.Generator().manual_seed(seed)
    picks = []
    for label in labels:
        candidates = (mnist.labels == label).nonzero().flatten()
        picks.append(candidates[torch.randint(len(candidates), (1,), generator=generator)])
    return dotted(mnist.images[torch.cat(picks)])


def write_folder(images: torch.Tensor, labels: list[int], folder: Path) -> None:
    """`folder/<label>/<i>.png`, the layout train_lora.py reads."""
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].numpy()).save(folder / str(label) / f"{i}.png")


@torch.no_grad()
def predict(classifier: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Class ids a classifier reads in uint8 images."""
    return classifier.predict(images.float() / 255)[0]


@torch.no_grad()
def through_the_model(images: torch.Tensor, labels: list[int], model: str, seed: int) -> torch.Tensor:
    r"""
    uint8 `images` after a light pass through the base model (img2img at `CHANNEL_STRENGTH`, DPM-Solver++-20): the
    same shapes with the model's own rendering of strokes. Any sample of the model has that rendering, so scorers that
    also train on such images judge shapes and textures rather than the pixels of the renderer that drew the style.
    """
    pipe = MnistImg2ImgPipeline.from_pretrained(model)
    pipe.scheduler = scheduler_from_config("dpm", pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    passed = []
    for first in range(0, len(images), 250):
        passed.append(
            pipe(
                image=images[first : first + 250].float() / 255,
                class_labels=labels[first : first + 250],
                strength=CHANNEL_STRENGTH,
                num_inference_steps=20,
                generator=torch.Generator().manual_seed(seed + first),
                output_type="pt",
            ).images
        )
    return (torch.cat(passed) * 255).round().to(torch.uint8)


def train_scorers(
    style: str, mnist: ImageClassData, per_digit: int, channel_per_digit: int, num_steps: int, model: str, seed: int
) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    r"""
    A digit classifier for `style`, a style classifier (1: `style`, 0: plain MNIST) and the same style classifier on
    [`stroke_shapes`], trained here on `per_digit` images of each digit and class, plus `channel_per_digit` of them
    passed through the base model ([`through_the_model`]).
    """
    labels = [d for d in range(10) for _ in range(per_digit)]
    styled = style_images(style, labels, seed, mnist)
    order = torch.randperm(len(mnist.labels), generator=torch.Generator().manual_seed(seed))[: len(labels)]
    plain, plain_labels = mnist.images[order], mnist.labels[order].tolist()
    picked = [i for i in range(len(labels)) if i % per_digit < channel_per_digit]
    styled_passed = through_the_model(styled[picked], [labels[i] for i in picked], model, seed)
    plain_passed = through_the_model(plain[picked], [plain_labels[i] for i in picked], model, seed)
    names = [str(d) for d in range(10)]
    digit_labels = torch.tensor(labels + [labels[i] for i in picked])
    digits = train_classifier(
        ImageClassData(torch.cat([styled, styled_passed]), digit_labels, names), num_steps=num_steps, seed=seed
    )
    num_plain, num_styled = len(labels) + len(picked), len(labels) + len(picked)
    both = ImageClassData(
        torch.cat([plain, plain_passed, styled, styled_passed]),
        torch.tensor([0] * num_plain + [1] * num_styled),
        ["mnist", style],
    )
    shapes = ImageClassData(stroke_shapes(both.images), both.labels, both.label_names)
    return (
        digits,
        train_classifier(both, num_steps=num_steps, seed=seed),
        train_classifier(shapes, num_steps=num_steps, seed=seed),
    )


def check_scorers(style: str, scorers: tuple[torch.nn.Module, ...], mnist_test: ImageClassData, model: str) -> dict:
    """The scorers' own accuracy on held-out images (also passed through the model): the ceiling of their verdicts."""
    labels = [d for d in range(10) for _ in range(50)]
    held_out = style_images(style, labels, 999_999, mnist_test)
    held_out_passed = through_the_model(held_out, labels, model, 999_999)
    digit_reader, style_reader, shape_reader = scorers

    def share(images: torch.Tensor, reader: torch.nn.Module, wanted: torch.Tensor | int) -> float:
        return round((predict(reader, images) == wanted).float().mean().item(), 3)

    return {
        "scorer_digit_accuracy": share(held_out, digit_reader, torch.tensor(labels)),
        "scorer_digit_accuracy_passed": share(held_out_passed, digit_reader, torch.tensor(labels)),
        "scorer_in_style_on_style": share(held_out, style_reader, 1),
        "scorer_in_style_on_style_passed": share(held_out_passed, style_reader, 1),
        "scorer_in_style_on_mnist": share(mnist_test.images[:500], style_reader, 1),
        "scorer_shapes_in_style_on_style": share(stroke_shapes(held_out), shape_reader, 1),
        "scorer_shapes_in_style_on_style_passed": share(stroke_shapes(held_out_passed), shape_reader, 1),
        "scorer_shapes_in_style_on_mnist": share(stroke_shapes(mnist_test.images[:500]), shape_reader, 1),
    }


@torch.no_grad()
def sample(
    pipe: MnistDiffusionPipeline, digits: list[int], per_digit: int, steps: int, **guidance: float
) -> torch.Tensor:
    """`per_digit` uint8 samples of each digit, seed 0, DPM-Solver++ at `steps` steps (the pipeline's guidance)."""
    out = pipe(
        class_labels=digits,
        num_images_per_prompt=per_digit,
        num_inference_steps=steps,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
        **guidance,
    ).images
    return (out * 255).round().to(torch.uint8)


def run_case(args, style, k, digits, mnist, scorers, workdir, train_seed: int = 0) -> dict:
    r"""
    Fine-tune on `k` images of each of `digits` in `style` with train_lora.py's defaults (its `--seed train_seed`);
    score on all digits.
    """
    labels = [d for d in digits for _ in range(k)]
    case = f"{style}-{k}-{len(digits)}-seed{train_seed}"
    data, output = workdir / case / "data", workdir / case / "lora"
    write_folder(style_images(style, labels, args.seed + 1000 + k, mnist), labels, data)
    command = [sys.executable, str(TRAIN_LORA), "--train_data_dir", str(data), "--output_dir", str(output)]
    command += ["--pretrained_model_name_or_path", str(args.model), "--seed", str(train_seed), *args.train_args]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    pipe = MnistDiffusionPipeline.from_pretrained(args.model)
    pipe.scheduler = scheduler_from_config("dpm", pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    everything = list(range(10))
    base = sample(pipe, everything, args.per_digit, args.steps)
    pipe.load_lora_weights(output)
    styled = sample(pipe, everything, args.per_digit, args.steps)
    low = (
        sample(pipe, everything, args.per_digit, args.steps, guidance_scale=args.low_guidance)
        if args.low_guidance
        else None
    )
    plain = sample(pipe, everything, args.per_digit, args.steps, adapter_guidance_stop=0.0)
    pipe.unload_lora_weights()
    unloaded = sample(pipe, everything, args.per_digit, args.steps)
    wanted = torch.tensor(everything).repeat_interleave(args.per_digit)
    digit_reader, style_reader, shape_reader = scorers

    def verdicts(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per sample: read as the wanted digit, in style by pixels, in style by shapes."""
        in_style_by_shapes = predict(shape_reader, stroke_shapes(images)) == 1
        return predict(digit_reader, images) == wanted, predict(style_reader, images) == 1, in_style_by_shapes

    def share(hits: torch.Tensor) -> float:
        return round(hits.float().mean().item(), 3)

    read, in_style, shape_in_style = verdicts(styled)
    _, base_in_style, base_shape_in_style = verdicts(base)
    seen = torch.isin(wanted, torch.tensor(digits))
    unet_bytes = (Path(args.model) / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size
    result = {
        "style": style,
        "k": k,
        "digits": f"{digits[0]}-{digits[-1]}",
        "train_seed": train_seed,
        "seconds": round(seconds, 1),
        "adapter_kb": round((output / "pytorch_lora_weights.safetensors").stat().st_size / 1024, 1),
        "adapter_share_of_unet": round((output / "pytorch_lora_weights.safetensors").stat().st_size / unet_bytes, 4),
        "digit_accuracy": share(read),
        "in_style": share(in_style),
        "base_in_style": share(base_in_style),
        "in_style_shapes": share(shape_in_style),
        "base_in_style_shapes": share(base_shape_in_style),
        "unload_bitwise": bool(torch.equal(unloaded, base)),
    }
    keys = ("digit_accuracy", "in_style", "in_style_shapes")
    # the same adapter with plain guidance (the adapter in both branches), and at a lower guidance scale
    for key, hits in zip(keys, verdicts(plain), strict=True):
        result[f"{key}_plain_guidance"] = share(hits)
    if low is not None:
        for key, hits in zip(keys, verdicts(low), strict=True):
            result[f"{key}_g{args.low_guidance}"] = share(hits)
    if len(digits) < 10:
        result["in_style_unseen_digits"] = share(in_style[~seen])
        result["in_style_shapes_unseen_digits"] = share(shape_in_style[~seen])
        result["digit_accuracy_unseen_digits"] = share(read[~seen])
    Image.fromarray(styled.view(10, args.per_digit, 28, 28).permute(0, 2, 1, 3).reshape(280, -1).numpy()).save(
        workdir / f"{case}.png"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=str(DIFFUSION_MODEL), help="The base pipeline (default: the release).")
    parser.add_argument("--mnist", default="ylecun/mnist", help="MNIST (Hub id or local folder) for the dot style.")
    parser.add_argument("--styles", nargs="+", default=list(STYLES), choices=STYLES)
    parser.add_argument("--k", nargs="+", type=int, default=[1, 5, 20], help="Training images per digit.")
    parser.add_argument("--carry_over_k", type=int, default=5, help="K of the digits-0-4-only run (0: skip it).")
    parser.add_argument(
        "--train_seeds", nargs="+", type=int, default=[0], help="train_lora.py --seed of each case's adapters."
    )
    parser.add_argument("--per_digit", type=int, default=10, help="Generated images per digit scored.")
    parser.add_argument("--steps", type=int, default=20, help="DPM-Solver++ steps of the scored samples.")
    parser.add_argument(
        "--low_guidance", type=float, default=1.5, help="Also score samples at this guidance scale (0: skip)."
    )
    parser.add_argument("--scorer_images", type=int, default=300, help="Images per digit the scorers train on.")
    parser.add_argument("--scorer_steps", type=int, default=600, help="Updates of each scorer (batch 128).")
    parser.add_argument(
        "--scorer_channel_images", type=int, default=100, help="Of those per digit, how many also pass the model."
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="Write the results as JSON lines here.")
    parser.add_argument("train_args", nargs="*", help="Extra train_lora.py flags (after --).")
    args = parser.parse_args()
    mnist = prepare_training_data(load_split(args.mnist, split="train").select(range(6000)))
    mnist_test = prepare_training_data(load_split(args.mnist, split="test").select(range(1000)))
    workdir = Path(tempfile.mkdtemp(prefix="bench-lora-"))
    print(f"Work folder: {workdir}")
    results = []
    for style in args.styles:
        scorers = train_scorers(
            style, mnist, args.scorer_images, args.scorer_channel_images, args.scorer_steps, str(args.model), args.seed
        )
        scorer_check = check_scorers(style, scorers, mnist_test, str(args.model))
        print(style, json.dumps(scorer_check), flush=True)
        cases = [(k, list(range(10))) for k in args.k]
        cases += [(args.carry_over_k, list(range(5)))] if args.carry_over_k else []
        for k, digits in cases:
            rows = [run_case(args, style, k, digits, mnist, scorers, workdir, seed) for seed in args.train_seeds]
            if len(rows) > 1:  # the mean over the training seeds: one adapter's figures move by 10 points or more
                numbers = [key for key, value in rows[0].items() if isinstance(value, float) and key != "seconds"]
                mean = {key: round(sum(row[key] for row in rows) / len(rows), 3) for key in numbers}
                seconds, bitwise = max(row["seconds"] for row in rows), all(row["unload_bitwise"] for row in rows)
                rows.append({**rows[0], **mean, "train_seed": "mean", "seconds": seconds, "unload_bitwise": bitwise})
            for row in rows:
                results.append({**row, **scorer_check})
                print(json.dumps(results[-1]), flush=True)
                if args.output:
                    with open(args.output, "a") as f:
                        f.write(json.dumps(results[-1]) + "\n")
    keys = list(results[0])
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for result in results:
        print("| " + " | ".join(str(result.get(key, "")) for key in keys) + " |")


if __name__ == "__main__":
    main()
