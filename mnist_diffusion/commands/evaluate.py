"""`mnist-diffusion evaluate`: score a pipeline's samples and write a JSON report, a markdown table and plots."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..evaluation import CONDITIONINGS
from ..loading import SCHEDULERS
from ..pretrained import FAST_GUIDANCE_SCALE, FAST_STEPS
from .arguments import (
    add_guidance_interval_arguments,
    check_model_flags,
    check_output_folder,
    finite_float,
    open_sampling_model,
    seed_number,
)
from .cas_evaluation import add_cas_arguments, check_cas_flags, check_cas_request, measure_cas

if TYPE_CHECKING:
    import torch

    from ..clip_model import ClipScorer
    from ..evaluation import EvaluationResult

#: Number of samples in each of the CLIP best and worst grids (fewer when fewer were scored).
GRID_SIZE = 64


def to_pil(images: torch.Tensor) -> list:
    """Images `(batch, channels, height, width)` in [0, 1] as PIL images (grayscale stays "L")."""
    from diffusers.image_processor import VaeImageProcessor

    return VaeImageProcessor.numpy_to_pil(VaeImageProcessor.pt_to_numpy(images))


def save_grid(images: torch.Tensor, path: Path) -> None:
    """Save images in [0, 1] as one grid of 8 columns."""
    from ..image_grid import image_grid

    cols = min(8, len(images))
    image_grid(to_pil(images), rows=-(-len(images) // cols), cols=cols).save(path)


def plot_per_class_accuracy(result: EvaluationResult, path: Path) -> None:
    """Bar chart of the conditional accuracy of each class, with the overall accuracy as a line."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(max(6, 0.6 * len(result.class_names)), 4), layout="constrained")
    ax = figure.subplots()
    ax.bar(result.class_names, [result.accuracy_per_class[name] for name in result.class_names], color="tab:blue")
    ax.axhline(result.accuracy, color="black", linestyle="--", label=f"overall {result.accuracy:.1%}")
    if result.reference_accuracy is not None:
        ax.axhline(result.reference_accuracy, color="tab:green", linestyle=":", label="classifier on real images")
    ax.set(ylim=(0, 1.05), xlabel="class", ylabel="conditional accuracy", title="Conditional accuracy per class")
    ax.tick_params(axis="x", labelrotation=45 if max(map(len, result.class_names)) > 2 else 0)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
    figure.savefig(path, dpi=120)


def plot_style_distributions(result: EvaluationResult, path: Path) -> None:
    """One histogram panel per style attribute: the unstyled samples and each request, with the tertile bounds."""
    import torch
    from matplotlib.figure import Figure

    from ..captions import SLANT_BOUNDS, THICKNESS_BOUNDS

    style = result.style_control
    attributes = list(dict.fromkeys(request.attribute for request in style.requests))
    bounds = {"thickness": THICKNESS_BOUNDS, "slant": SLANT_BOUNDS}
    figure = Figure(figsize=(6 * len(attributes), 4), layout="constrained")
    for ax, attribute in zip(figure.subplots(1, len(attributes), squeeze=False)[0], attributes, strict=True):
        requests = [request for request in style.requests if request.attribute == attribute]
        everything = torch.cat([style.baseline[attribute].values] + [r.distribution.values for r in requests])
        bins = torch.linspace(everything.min().item(), everything.max().item() + 1e-6, 31).tolist()
        ax.hist(style.baseline[attribute].values.tolist(), bins=bins, histtype="step", color="gray", label="unstyled")
        for request in requests:
            label = f"{request.request} (strict {request.strict_agreement:.0%})"
            ax.hist(request.distribution.values.tolist(), bins=bins, histtype="step", linewidth=1.5, label=label)
        for bound in bounds[attribute]:
            ax.axvline(bound, color="black", linestyle=":", linewidth=1)
        ax.set(xlabel=attribute, ylabel="samples", title=f"Measured {attribute} (dotted: tertile bounds)")
        ax.legend(fontsize="small")
    figure.savefig(path, dpi=120)


def open_clip_scorer(name: str | None, class_names: list[str]) -> ClipScorer | None:
    """`--clip-model`: a folder or Hub id; "none" skips; by default the shipped MNIST-CLIP for digit models."""
    from ..clip_model import ClipScorer

    if name == "none" or (name is None and not all(n.isdigit() for n in class_names)):
        return None
    return ClipScorer.from_pretrained(name)


def evaluate_command(args: argparse.Namespace) -> EvaluationResult:
    """Evaluate `args.model` and write `evaluation.json`, `evaluation.md` and the plots to `args.output_dir`."""
    from ..classifier import MnistClassifier
    from ..data import load_split, prepare_training_data
    from ..evaluation import evaluate

    if args.num_samples < 1:
        raise ValueError(f"--num-samples is {args.num_samples}; expected at least 1.")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size is {args.batch_size}; expected at least 1.")
    check_cas_flags(args)
    check_model_flags(args)
    output_dir = check_output_folder("--output-dir", args.output_dir)
    pipe, model_name, steps, guidance_scale = open_sampling_model(args)
    classifier = MnistClassifier.from_pretrained(args.classifier) if args.classifier else None
    reference = prepare_training_data(
        load_split(args.reference_dataset, None, args.reference_split), resolution=pipe.unet.config.sample_size
    )
    id2label = pipe.config.id2label or {}
    clip_scorer = open_clip_scorer(args.clip_model, list(id2label.values()))
    sampling = {
        "conditioning": args.conditioning,
        "guidance_scale": guidance_scale,
        "guidance_start": args.guidance_start,
        "guidance_stop": args.guidance_stop,
        "num_inference_steps": steps,
        "seed": args.seed,
        "batch_size": args.batch_size,
    }
    cas_request = None
    if args.cas:  # checked, and the real training images read, before any sampling
        cas_request = check_cas_request(args, pipe, reference, {**sampling, "model_name": model_name})
    result = evaluate(
        pipe,
        args.num_samples,
        classifier=classifier,
        clip_scorer=clip_scorer,
        reference_images=reference.images,
        reference_labels=reference.labels,
        style_samples_per_request=args.style_samples_per_request,
        **sampling,
    )
    result.settings.update(
        model=model_name,
        classifier=args.classifier or "shipped",
        clip_model=args.clip_model or ("shipped MNIST-CLIP" if clip_scorer else "none"),
        reference=f"{args.reference_dataset} [{args.reference_split}], {len(reference.labels)} images",
    )
    report, markdown = result.to_dict(), result.to_markdown()
    if cas_request is not None:
        score, images = measure_cas(pipe, cas_request)
        report["cas"] = {**score.to_dict(), "images": images}
        markdown += "\n## Classification Accuracy Score\n\n" + score.to_markdown()
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "evaluation.json").write_text(json.dumps(report, indent=2) + "\n")
    (output_dir / "evaluation.md").write_text(f"# Evaluation of {model_name}\n\n{markdown}")
    plot_per_class_accuracy(result, output_dir / "per_class_accuracy.png")
    if result.clip_scores is not None:
        order = result.clip_scores.argsort(descending=True)
        count = min(GRID_SIZE, len(order))
        save_grid(result.images[order[:count]], output_dir / "clip_best.png")
        save_grid(result.images[order.flip(0)[:count]], output_dir / "clip_worst.png")
    if result.style_control is not None:
        plot_style_distributions(result, output_dir / "style_distributions.png")
    print(markdown)
    print(f"Wrote the evaluation to {output_dir}")
    return result


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `evaluate` subcommand to the `mnist-diffusion` parser."""
    parser = commands.add_parser(
        "evaluate",
        help="Score samples: conditional accuracy, classifier FID, precision/recall, CLIP, style control; --cas: CAS.",
    )
    parser.add_argument("--model", help="A saved pipeline: folder or Hub repo id (default: the released model).")
    parser.add_argument(
        "--fast",
        action="store_true",
        help=f"Evaluate the shipped few-step student distilled for --steps ({FAST_STEPS} steps and guidance "
        f"{FAST_GUIDANCE_SCALE} unless --steps / --guidance-scale say otherwise).",
    )
    parser.add_argument("--num-samples", type=int, default=1000, help="Samples, a multiple of the classes (1000).")
    parser.add_argument("--output-dir", required=True, help="Folder for evaluation.json, evaluation.md and plots.")
    parser.add_argument(
        "--reference-dataset",
        default="ylecun/mnist",
        help="Real images for classifier FID: Hub id or local folder, e.g. ../shared/data/mnist (ylecun/mnist).",
    )
    parser.add_argument("--reference-split", default="test", help="Split of the reference dataset (test).")
    parser.add_argument("--classifier", help="Scoring classifier folder (default: the shipped one for the classes).")
    parser.add_argument(
        "--clip-model", help='CLIP folder or Hub id for CLIP scores; "none" skips (default: shipped MNIST-CLIP).'
    )
    parser.add_argument("--conditioning", choices=CONDITIONINGS, default="auto", help="How samples are asked for.")
    parser.add_argument(
        "--guidance-scale",
        type=finite_float,
        help=f"Classifier-free guidance (default 3.0; with --fast {FAST_GUIDANCE_SCALE}).",
    )
    add_guidance_interval_arguments(parser)
    parser.add_argument("--steps", type=int, help=f"Denoising steps (default 50; with --fast {FAST_STEPS}).")
    parser.add_argument("--scheduler", choices=sorted(SCHEDULERS), help="Swap the pipeline's scheduler.")
    parser.add_argument("--seed", type=seed_number, default=0, help="Sample i uses seed + i (0).")
    parser.add_argument("--batch-size", type=int, default=100, help="Images per pipeline call (100).")
    parser.add_argument(
        "--style-samples-per-request", type=int, default=100, help="Samples per style request; 0 skips (100)."
    )
    add_cas_arguments(parser)
    parser.set_defaults(func=evaluate_command)
