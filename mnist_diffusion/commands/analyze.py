"""`mnist-diffusion analyze`: analyses of a pipeline's sampling process (`analyze recognizability`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..evaluation import CONDITIONINGS
from ..loading import SCHEDULERS, check_model_argument, open_pipeline
from .arguments import check_output_folder, finite_float, seed_number

if TYPE_CHECKING:
    from ..recognizability import RecognizabilityResult


def plot_recognizability(result: RecognizabilityResult, path: Path) -> None:
    """Accuracy on the predicted x_0 against the fraction of denoising done: one curve per class and the overall."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5), layout="constrained")
    ax = figure.subplots()
    for name in result.class_names:
        ax.plot(result.fractions, result.accuracy_per_class[name], linewidth=1, label=name)
    ax.plot(result.fractions, result.accuracy, color="black", linewidth=2.5, label="overall")
    for threshold in (0.9, 0.99):
        ax.axhline(threshold, color="gray", linestyle=":", linewidth=1)
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.02),
        xlabel="fraction of the denoising process",
        ylabel="classifier accuracy on predicted x_0",
        title="When does the sample become recognisable?",
    )
    ax.legend(fontsize="small", ncol=2, loc="lower right")
    figure.savefig(path, dpi=120)


def recognizability_command(args: argparse.Namespace) -> RecognizabilityResult:
    """Run the recognisability analysis and write `recognizability.{json,md,png}` to `args.output_dir`."""
    from ..classifier import MnistClassifier
    from ..recognizability import recognizability

    if args.samples_per_class < 1:
        raise ValueError(f"--samples-per-class is {args.samples_per_class}; expected at least 1.")
    check_model_argument(args.model)
    output_dir = check_output_folder("--output-dir", args.output_dir)
    pipe = open_pipeline(args.model, args.scheduler)
    result = recognizability(
        pipe,
        args.samples_per_class,
        classifier=MnistClassifier.from_pretrained(args.classifier) if args.classifier else None,
        conditioning=args.conditioning,
        guidance_scale=args.guidance_scale,
        num_inference_steps=args.steps,
        seed=args.seed,
        batch_size=args.batch_size,
    )
    result.settings["model"] = args.model or "released mnist-diffusion"
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "recognizability.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    title = f"# Recognisability of {args.model or 'the released mnist-diffusion model'}\n\n"
    (output_dir / "recognizability.md").write_text(title + result.to_markdown())
    plot_recognizability(result, output_dir / "recognizability.png")
    print(result.to_markdown())
    print(f"Wrote the analysis to {output_dir}")
    return result


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `analyze` subcommand (with its analyses as sub-subcommands) to the `mnist-diffusion` parser."""
    analyze = commands.add_parser("analyze", help="Analyse a pipeline's sampling process.")
    analyses = analyze.add_subparsers(dest="analysis", required=True)
    parser = analyses.add_parser(
        "recognizability", help="Classifier accuracy on the predicted x_0 along the denoising trajectory."
    )
    parser.add_argument("--model", help="A saved pipeline: folder or Hub repo id (default: the released model).")
    parser.add_argument("--samples-per-class", type=int, default=20, help="Trajectories per class (20).")
    parser.add_argument("--output-dir", required=True, help="Folder for recognizability.json, .md and .png.")
    parser.add_argument("--classifier", help="Scoring classifier folder (default: the shipped one for the classes).")
    parser.add_argument("--conditioning", choices=CONDITIONINGS, default="auto", help="How samples are asked for.")
    parser.add_argument("--guidance-scale", type=finite_float, default=3.0, help="Classifier-free guidance (3.0).")
    parser.add_argument("--steps", type=int, default=50, help="Denoising steps (50).")
    parser.add_argument("--scheduler", choices=sorted(SCHEDULERS), help="Swap the pipeline's scheduler.")
    parser.add_argument("--seed", type=seed_number, default=0, help="Trajectory i uses seed + i (0).")
    parser.add_argument("--batch-size", type=int, default=100, help="Trajectories per pipeline call (100).")
    parser.set_defaults(func=recognizability_command)
