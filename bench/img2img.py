"""Benchmark: clean up degraded test digits and code-drawn sketches with image-to-image, over strength 0.2..1.0."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import matplotlib
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from mnist_diffusion import MnistImg2ImgPipeline
from mnist_diffusion.data import decode_images, load_split
from mnist_diffusion.evaluation import class_names_and_classifier
from mnist_diffusion.image_input import prepare_image
from mnist_diffusion.loading import SCHEDULERS, open_pipeline
from mnist_diffusion.pretrained import DIFFUSION_MODEL
from mnist_diffusion.visualization import labeled_grid, to_images

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SETS = ("blur", "salt-and-pepper", "crude redraw", "sketch")


def _ellipse(cx: float, cy: float, rx: float, ry: float, start: float = 0.0, end: float = 360.0) -> list:
    angles = [math.radians(start + (end - start) * i / 24) for i in range(25)]
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in angles]


# One skeleton per digit: polylines in the unit square (y down), drawn with jitter, slant and stroke width.
SKELETONS = {
    0: [_ellipse(0.5, 0.5, 0.26, 0.38)],
    1: [[(0.42, 0.22), (0.55, 0.1), (0.55, 0.9)]],
    2: [[(0.25, 0.3), (0.35, 0.14), (0.6, 0.12), (0.72, 0.28), (0.65, 0.45), (0.25, 0.88), (0.78, 0.88)]],
    3: [[(0.25, 0.14), (0.7, 0.14), (0.45, 0.45), (0.72, 0.6), (0.68, 0.82), (0.45, 0.9), (0.24, 0.82)]],
    4: [[(0.6, 0.9), (0.6, 0.1), (0.2, 0.65), (0.8, 0.65)]],
    5: [[(0.72, 0.12), (0.3, 0.12), (0.28, 0.45), (0.6, 0.42), (0.72, 0.6), (0.65, 0.85), (0.28, 0.88)]],
    6: [[(0.66, 0.12), (0.4, 0.35), (0.28, 0.65), (0.4, 0.88), (0.65, 0.85), (0.7, 0.65), (0.55, 0.52), (0.3, 0.62)]],
    7: [[(0.22, 0.14), (0.78, 0.14), (0.42, 0.9)]],
    8: [_ellipse(0.5, 0.3, 0.2, 0.18), _ellipse(0.5, 0.7, 0.24, 0.2)],
    9: [_ellipse(0.5, 0.32, 0.22, 0.2), [(0.72, 0.32), (0.62, 0.9)]],
}


def draw_sketch(label: int, generator: torch.Generator, size: int = 112):
    """A dark-on-white RGB drawing of `label` (jittered skeleton, random slant, scale and pen width), as from a pad."""

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * torch.rand((), generator=generator).item()

    slant, scale, width = uniform(-0.25, 0.25), uniform(0.75, 0.95), int(uniform(0.07, 0.12) * size)
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    for line in SKELETONS[label]:
        points = []
        for x, y in line:
            x, y = x + uniform(-0.03, 0.03), y + uniform(-0.03, 0.03)
            x = x + slant * (0.5 - y)
            points.append((size * (0.5 + scale * (x - 0.5)), size * (0.5 + scale * (y - 0.5))))
        draw.line(points, fill="black", width=width, joint="curve")
    return image


def degrade(kind: str, digits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Degraded copies of `(n, 1, 28, 28)` digits in [0, 1]: heavy blur, salt-and-pepper, or thresholded+dilated."""
    if kind == "blur":
        radius, sigma = 4, 2.0
        x = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-(x**2) / (2 * sigma**2))
        kernel = (kernel[:, None] * kernel[None, :]) / kernel.sum() ** 2
        blurred = F.conv2d(F.pad(digits, [radius] * 4), kernel[None, None])
        return blurred / blurred.amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-6)
    if kind == "salt-and-pepper":
        noise = torch.rand(digits.shape, generator=generator)
        salt = torch.rand(digits.shape, generator=generator) < 0.5
        return torch.where(noise < 0.2, salt.float(), digits)
    if kind == "crude redraw":
        return F.max_pool2d((digits > 0.5).float(), kernel_size=3, stride=1, padding=1)
    raise ValueError(f"Unknown degradation {kind!r}.")


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image structural similarity of `(n, 1, H, W)` images in [0, 1] (7x7 uniform window, as scikit-image)."""
    c1, c2 = 0.01**2, 0.03**2

    def mean(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 7, stride=1)

    mu_a, mu_b = mean(a), mean(b)
    var_a, var_b = mean(a * a) - mu_a**2, mean(b * b) - mu_b**2
    cov = mean(a * b) - mu_a * mu_b
    value = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return value.mean(dim=(1, 2, 3))


def stroke_iou(output: torch.Tensor, given: torch.Tensor) -> torch.Tensor:
    """Per-image overlap of the strokes (> 0.5) of `output` and of the 3x3-median-filtered input (specks removed)."""
    patches = F.unfold(F.pad(given, [1] * 4, mode="replicate"), 3)
    cleaned = patches.median(dim=1).values.reshape(given.shape)
    a, b = output > 0.5, cleaned > 0.5
    return (a & b).sum(dim=(1, 2, 3)) / (a | b).sum(dim=(1, 2, 3)).clamp(min=1)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=str(DIFFUSION_MODEL), help="A saved pipeline (default: the released one).")
    parser.add_argument("--dataset_name", default="../shared/data/mnist", help="Real digits: test split degraded.")
    parser.add_argument("--num_images", type=int, default=100, help="Images per set (test digits; sketches).")
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.2, 0.4, 0.6, 0.8, 1.0])
    parser.add_argument("--scheduler", default="dpm", choices=sorted(SCHEDULERS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance_scale", type=float, default=3.0)
    parser.add_argument("--batch_size", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default="bench_img2img.png", help="PNG of accuracy and faithfulness vs strength.")
    parser.add_argument("--figure", help="Also save a strength sweep of three sketches (the README figure).")
    args = parser.parse_args()
    if args.num_images < 10 or not all(0 < s <= 1 for s in args.strengths):
        raise ValueError(f"--num_images {args.num_images}, --strengths {args.strengths}: expected >= 10, (0, 1].")
    return args


def redraw(pipe: MnistImg2ImgPipeline, images: torch.Tensor, labels: list[int], strength: float, args) -> torch.Tensor:
    """Image-to-image results in [0, 1], in batches."""
    results = []
    for start in range(0, len(images), args.batch_size):
        stop = start + args.batch_size
        results.append(
            pipe(
                image=images[start:stop],
                class_labels=labels[start:stop],
                strength=strength,
                num_inference_steps=args.steps,
                guidance_scale=args.guidance_scale,
                invert=False,
                generator=torch.Generator().manual_seed(args.seed + start),
                output_type="pt",
            ).images
        )
    return torch.cat(results)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    pipe = MnistImg2ImgPipeline.from_pipe(open_pipeline(args.model, args.scheduler))
    pipe.set_progress_bar_config(disable=True)
    _, classifier = class_names_and_classifier(pipe, None)
    size = pipe.unet.config.sample_size
    generator = torch.Generator().manual_seed(args.seed)
    test = load_split(args.dataset_name, split="test")
    chosen = torch.randperm(len(test), generator=generator)[: args.num_images]
    digits = decode_images(test.select(chosen.tolist()), "image", size).float() / 255
    labels = torch.tensor(test.select(chosen.tolist())["label"])
    sketch_labels = torch.arange(args.num_images) % 10
    sketches = [draw_sketch(int(label), generator) for label in sketch_labels]
    # the sketches go through the pipeline's own input handling (RGB, 112 px, dark on white) once, for all rows
    sketch_inputs = prepare_image(sketches, size, size) / 2 + 0.5
    sets = {kind: (degrade(kind, digits, generator), labels, digits) for kind in SETS[:3]}
    sets["sketch"] = (sketch_inputs, sketch_labels, None)
    print(
        f"Image-to-image on {args.num_images} images per set ({args.dataset_name} test digits degraded; sketches "
        f"drawn in code), {args.scheduler} {args.steps} steps, guidance {args.guidance_scale}, the true class label."
    )
    print("accuracy: the requested class; SSIM: to the clean test digit; IoU: strokes shared with the input.")
    print(f"{'set':<16} {'strength':>8} {'accuracy':>8} {'SSIM':>6} {'IoU':>6} {'s':>5}")
    rows = {kind: [] for kind in sets}
    for kind, (inputs, requested, clean) in sets.items():
        for strength in [0.0, *args.strengths]:
            start = time.perf_counter()
            outputs = inputs if strength == 0 else redraw(pipe, inputs * 2 - 1, requested.tolist(), strength, args)
            seconds = time.perf_counter() - start
            predicted, _ = classifier.predict(outputs)
            accuracy = (predicted == requested).float().mean().item()
            similarity = ssim(outputs, clean).mean().item() if clean is not None else float("nan")
            overlap = stroke_iou(outputs, inputs).mean().item()
            rows[kind].append((strength, accuracy, similarity, overlap))
            print(
                f"{kind:<16} {strength:>8.1f} {100 * accuracy:>7.1f}% {similarity:>6.3f} {overlap:>6.3f} "
                f"{seconds:>5.0f}",
                flush=True,
            )
    plot(rows, Path(args.plot))
    if args.figure:
        sweep_figure(pipe, sketch_inputs[:3], sketch_labels[:3].tolist(), args, Path(args.figure))


def plot(rows: dict[str, list[tuple[float, float, float, float]]], path: Path) -> None:
    """Accuracy, SSIM and stroke IoU against strength (strength 0 = the input itself), one line per set."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for kind, values in rows.items():
        strengths, accuracy, similarity, overlap = zip(*values, strict=True)
        axes[0].plot(strengths, [100 * a for a in accuracy], marker="o", label=kind)
        if not math.isnan(similarity[0]):
            axes[1].plot(strengths, similarity, marker="o", label=kind)
        axes[2].plot(strengths, overlap, marker="o", label=kind)
    titles = ("requested-class accuracy (%)", "SSIM to the clean digit", "stroke IoU with the input")
    for axis, title in zip(axes, titles, strict=True):
        axis.set_title(title)
        axis.set_xlabel("strength (0 = input)")
        axis.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    print(f"Saved {path}")


def sweep_figure(pipe, sketches: torch.Tensor, labels: list[int], args, path: Path) -> None:
    """Rows: a sketch, then its image-to-image results at each strength (same seed)."""
    rows = []
    for sketch, label in zip(sketches, labels, strict=True):
        outputs = [redraw(pipe, sketch[None] * 2 - 1, [label], strength, args) for strength in args.strengths]
        rows.append(to_images(torch.cat([sketch[None], *outputs]) * 2 - 1))
    columns = ["sketch"] + [f"strength {strength}" for strength in args.strengths]
    figure = labeled_grid(rows, column_labels=columns, scale=3)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.save(path)
    print(f"Saved {path}")


if __name__ == "__main__":
    main()
