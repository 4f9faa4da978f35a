"""Benchmark: sampling speed and quality of DDPM-1000, DDIM-50 and DPM-Solver++-20 with classifier-free guidance."""

from __future__ import annotations

import argparse
import inspect
import statistics
import time

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from mnist_diffusion import MnistDDPMScheduler, MnistDiffusionPipeline
from mnist_diffusion.data import load_split, prepare_training_data
from mnist_diffusion.evaluation import evaluate
from mnist_diffusion.pretrained import DIFFUSION_MODEL

SAMPLERS = [
    ("DDPM", MnistDDPMScheduler, 1000),
    ("DDIM", DDIMScheduler, 50),
    ("DPM-Solver++", DPMSolverMultistepScheduler, 20),
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=str(DIFFUSION_MODEL), help="A saved pipeline (default: the released one).")
    parser.add_argument("--dataset_name", default="../shared/data/mnist", help="Real test split for classifier FID.")
    parser.add_argument("--batch_size", type=int, default=64, help="Images per timed pipeline call.")
    parser.add_argument("--num_samples", type=int, default=1000, help="Samples scored for DDIM and DPM-Solver++.")
    parser.add_argument(
        "--ddpm_num_samples", type=int, default=100, help="Samples scored (and at most timed) for DDPM-1000 (slow)."
    )
    parser.add_argument("--guidance_scale", type=float, default=None, help="Default: the pipeline's own default.")
    parser.add_argument(
        "--guidance_stop",
        type=float,
        nargs="*",
        default=[],
        help="Also time DPM-Solver++-20 with guidance on only the first fraction of its steps (e.g. 0.5).",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="Timed calls per sampler, median reported (DDPM-1000: always one)."
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if min(args.batch_size, args.num_samples, args.ddpm_num_samples) < 10:
        raise ValueError("--batch_size, --num_samples and --ddpm_num_samples must be at least 10.")
    if args.repeats < 1:
        raise ValueError(f"--repeats is {args.repeats}; expected at least 1.")
    return args


def timed_call(
    pipe: MnistDiffusionPipeline, batch_size: int, steps: int, seed: int, repeats: int, **guidance
) -> float:
    """Median seconds of `repeats` pipeline calls generating `batch_size` images (digits 0..9 in turn), after a
    short warm-up call."""
    labels = [i % 10 for i in range(batch_size)]
    pipe(class_labels=labels, num_inference_steps=2, output_type="pt", **guidance)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        pipe(
            class_labels=labels,
            num_inference_steps=steps,
            generator=torch.Generator().manual_seed(seed),
            output_type="pt",
            **guidance,
        )
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main() -> None:
    args = parse_args()
    pipe = MnistDiffusionPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    guidance = (
        args.guidance_scale or inspect.signature(MnistDiffusionPipeline.__call__).parameters["guidance_scale"].default
    )
    test = prepare_training_data(load_split(args.dataset_name, split="test"))
    base_config = pipe.scheduler.config
    rows = []
    runs = [(*sampler, 1.0) for sampler in SAMPLERS] + [(*SAMPLERS[-1], stop) for stop in args.guidance_stop]
    for name, scheduler_cls, steps, stop in runs:
        pipe.scheduler = scheduler_cls.from_config(base_config)
        num_samples = args.ddpm_num_samples if name == "DDPM" else args.num_samples
        batch_size = min(args.batch_size, num_samples)  # DDPM-1000 is timed on fewer images when asked to
        repeats = 1 if name == "DDPM" else args.repeats
        seconds = timed_call(pipe, batch_size, steps, args.seed, repeats, guidance_scale=guidance, guidance_stop=stop)
        result = evaluate(
            pipe,
            num_samples,
            reference_images=test.images,
            reference_labels=test.labels,
            conditioning="label",
            guidance_scale=guidance,
            guidance_stop=stop,
            num_inference_steps=steps,
            seed=args.seed,
            batch_size=min(num_samples, 250),
            style_samples_per_request=0,
        )
        sampler = f"{name}-{steps}" + (f", guidance on the first {stop:.0%} of steps" if stop < 1 else "")
        rows.append((sampler, batch_size, seconds, num_samples, result.accuracy, result.classifier_fid))
        print(rows[-1], flush=True)
    print(f"\nSampling on {torch.get_num_threads()} CPU threads, guidance {guidance:g} (batched CFG), {args.model}:\n")
    print("| sampler | images per call | median s | images/s | scored samples | cond. accuracy | classifier FID |")
    print("|---|---|---|---|---|---|---|")
    for sampler, batch_size, seconds, num_samples, accuracy, fid in rows:
        print(
            f"| {sampler} | {batch_size} | {seconds:.2f} | {batch_size / seconds:.1f} | {num_samples} | "
            f"{100 * accuracy:.1f}% | {fid:.1f} |"
        )


if __name__ == "__main__":
    main()
