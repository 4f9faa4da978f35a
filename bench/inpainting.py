"""Benchmark: repair real test digits with half (or a 14x14 block) hidden, with and without their class label."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from mnist_diffusion import MnistInpaintPipeline
from mnist_diffusion.data import decode_images, load_split
from mnist_diffusion.evaluation import class_names_and_classifier, score_samples
from mnist_diffusion.loading import SCHEDULERS, open_pipeline
from mnist_diffusion.pretrained import DIFFUSION_MODEL
from mnist_diffusion.visualization import labeled_grid, to_images

MASKS = ("top", "bottom", "left", "right", "block")


def make_masks(kind: str, num: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """`(num, 1, size, size)` masks, 1 = repaint: a half of the image, or a random `size/2` square block each."""
    masks = torch.zeros(num, 1, size, size)
    half = size // 2
    if kind == "top":
        masks[..., :half, :] = 1
    elif kind == "bottom":
        masks[..., half:, :] = 1
    elif kind == "left":
        masks[..., :half] = 1
    elif kind == "right":
        masks[..., half:] = 1
    elif kind == "block":
        corners = torch.randint(0, size - half + 1, (num, 2), generator=generator)
        for mask, (top, left) in zip(masks, corners.tolist(), strict=True):
            mask[:, top : top + half, left : left + half] = 1
    else:
        raise ValueError(f"Unknown mask {kind!r}; expected one of {list(MASKS)}.")
    return masks


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=str(DIFFUSION_MODEL), help="A saved pipeline (default: the released one).")
    parser.add_argument("--dataset_name", default="../shared/data/mnist", help="Real digits: test split repaired.")
    parser.add_argument("--num_digits", type=int, default=1000, help="Test digits repaired per mask (random subset).")
    parser.add_argument("--masks", nargs="+", default=list(MASKS), choices=MASKS)
    parser.add_argument("--conditions", nargs="+", default=["label", "none"], choices=["label", "none"])
    parser.add_argument("--scheduler", default="ddpm", choices=sorted(SCHEDULERS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--jump_length", type=int, default=5)
    parser.add_argument("--jump_n_sample", type=int, default=2)
    parser.add_argument("--guidance_scale", type=float, default=3.0, help="With the label (no label: no guidance).")
    parser.add_argument("--batch_size", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure", help="Also save a figure: per mask, masked inputs and their labelled repairs.")
    args = parser.parse_args()
    if args.num_digits < 10 or args.steps < 1 or args.batch_size < 1:
        raise ValueError(f"--num_digits {args.num_digits}, --steps {args.steps}: expected >= 10 and >= 1.")
    return args


def repair(
    pipe: MnistInpaintPipeline, images: torch.Tensor, masks: torch.Tensor, labels: list[int] | None, args, seed: int
) -> torch.Tensor:
    """Inpainted images in [0, 1], in batches, one generator per batch seeded from `seed`."""
    results = []
    for start in range(0, len(images), args.batch_size):
        stop = start + args.batch_size
        results.append(
            pipe(
                image=images[start:stop],
                mask_image=masks[start:stop],
                class_labels=labels[start:stop] if labels is not None else None,
                num_inference_steps=args.steps,
                jump_length=args.jump_length,
                jump_n_sample=args.jump_n_sample,
                guidance_scale=args.guidance_scale,
                invert=False,
                generator=torch.Generator().manual_seed(seed + start),
                output_type="pt",
            ).images
        )
    return torch.cat(results)


def masked_view(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """What the model sees: the hidden region shown mid-gray."""
    return images * (1 - masks) + 0.5 * masks


def main() -> None:
    args = parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    pipe = MnistInpaintPipeline.from_pipe(open_pipeline(args.model, args.scheduler))
    pipe.set_progress_bar_config(disable=True)
    class_names, classifier = class_names_and_classifier(pipe, None)
    test = load_split(args.dataset_name, split="test")
    size = pipe.unet.config.sample_size
    reference = decode_images(test, "image", size)
    reference_labels = torch.tensor(test["label"])
    generator = torch.Generator().manual_seed(args.seed)
    chosen = torch.randperm(len(test), generator=generator)[: args.num_digits]
    digits, labels = reference[chosen].float() / 255, reference_labels[chosen]
    print(
        f"Inpainting {len(digits)} test digits of {args.dataset_name} per mask; {args.scheduler} {args.steps} steps, "
        f"RePaint jump_length {args.jump_length} jump_n_sample {args.jump_n_sample}, guidance {args.guidance_scale} "
        f"with the label; classifier FID against the {len(reference)} test digits."
    )
    print(
        f"{'mask':<7} {'condition':<9} {'accuracy':>8} {'masked input acc':>16} {'clf FID':>8} {'FID floor':>9} "
        f"{'s':>6}"
    )
    figure_rows = {}
    for kind in args.masks:
        masks = make_masks(kind, len(digits), size, generator)
        masked_predicted, _ = classifier.predict(masked_view(digits, masks))
        masked_accuracy = (masked_predicted == labels).float().mean().item()
        for condition in args.conditions:
            start = time.perf_counter()
            repaired = repair(pipe, digits, masks, labels.tolist() if condition == "label" else None, args, args.seed)
            seconds = time.perf_counter() - start
            known_error = ((repaired - digits).abs() * (1 - masks)).max().item()
            if known_error > 1 / 255 + 1e-6:
                raise RuntimeError(f"Known pixels changed by {known_error:.4f} > 1/255 ({kind}, {condition}).")
            result = score_samples(
                repaired,
                labels,
                class_names,
                classifier,
                reference_images=reference,
                reference_labels=reference_labels,
                seed=args.seed,
            )
            print(
                f"{kind:<7} {condition:<9} {100 * result.accuracy:>7.1f}% {100 * masked_accuracy:>15.1f}% "
                f"{result.classifier_fid:>8.2f} {result.classifier_fid_floor:>9.2f} {seconds:>6.0f}",
                flush=True,
            )
            if condition == "label":
                figure_rows[kind] = (masked_view(digits[:6], masks[:6]), repaired[:6])
    if args.figure and figure_rows:
        save_figure(figure_rows, Path(args.figure))


def save_figure(rows: dict[str, tuple[torch.Tensor, torch.Tensor]], path: Path) -> None:
    """One row per mask: each masked digit (hidden part gray) followed by its repair with the true label."""
    # masked and repaired digits alternate along each row
    cells = [to_images(torch.stack(pair, dim=1).flatten(0, 1) * 2 - 1) for pair in rows.values()]
    columns = ["masked", "repaired"] * (len(cells[0]) // 2)
    figure = labeled_grid(cells, row_labels=list(rows), column_labels=columns, scale=3)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.save(path)
    print(f"Saved {path}")


if __name__ == "__main__":
    main()
