"""Benchmark: sampling speed and quality of DDPM-1000, DDIM-50 and DPM-Solver++-20 with classifier-free guidance, and
of the few-step distilled student at 1, 2, 4 and 8 steps, in one run."""

from __future__ import annotations

import argparse
import inspect
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean as mean

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from mnist_diffusion import MnistDDPMScheduler, MnistDiffusionPipeline, MnistUNet2DConditionModel
from mnist_diffusion.data import load_split, prepare_training_data
from mnist_diffusion.evaluation import (
    EvaluationResult,
    ReferenceFeatures,
    default_classifier,
    evaluate,
    mean_and_range,
)
from mnist_diffusion.pretrained import DIFFUSION_MODEL, FAST_DIFFUSION_MODEL, fast_unet_subfolder

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
        "--repeats",
        type=int,
        default=3,
        help="Timed calls per sampler (DDPM-1000: one), taken round-robin over the samplers; median reported.",
    )
    parser.add_argument(
        "--samplers",
        nargs="*",
        default=[name for name, _, _ in SAMPLERS],
        choices=[name for name, _, _ in SAMPLERS],
        help="The teacher's samplers to run (default all).",
    )
    parser.add_argument("--fast_model", default=str(FAST_DIFFUSION_MODEL), help="The few-step student ('' skips it).")
    parser.add_argument("--fast_steps", type=int, nargs="*", default=[1, 2, 4, 8], help="The student's step counts.")
    parser.add_argument("--fast_guidance_scale", type=float, default=1.45, help="The student's embedded guidance.")
    parser.add_argument(
        "--conditioning", default="label", choices=["label", "prompt", "label+prompt"], help="See evaluate()."
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0],
        help="Scored once per seed and averaged, as bench/guidance_sweep.py does (timing uses the first).",
    )
    parser.add_argument(
        "--style_samples_per_request",
        type=int,
        default=0,
        help="Also measure style control (evaluate's strict agreement, first seed), this many samples per request.",
    )
    args = parser.parse_args()
    if min(args.batch_size, args.num_samples, args.ddpm_num_samples) < 10:
        raise ValueError("--batch_size, --num_samples and --ddpm_num_samples must be at least 10.")
    if args.repeats < 1:
        raise ValueError(f"--repeats is {args.repeats}; expected at least 1.")
    return args


@dataclass
class SamplerRun:
    """One row of the table: a pipeline with its scheduler, how it samples, and how it is timed and scored."""

    name: str
    pipe: MnistDiffusionPipeline
    sampling: dict
    batch_size: int
    num_samples: int
    repeats: int
    style: bool


def interleaved_timings(runs: list[SamplerRun], seed: int, conditioning: str) -> list[float]:
    """Median seconds per call of each run generating `batch_size` images (digits 0..9 in turn, as labels and/or
    prompts per `conditioning`). After one warm-up call of each, the calls go round-robin, one per run and round, so
    that a change in the machine's speed during the benchmark slows every sampler alike and the speed-ups stay fair."""
    inputs = []
    for run in runs:
        digits = [i % 10 for i in range(run.batch_size)]
        inputs.append({"class_labels": digits} if "label" in conditioning else {})
        if "prompt" in conditioning:
            inputs[-1]["prompt"] = [f"a handwritten {digit}" for digit in digits]
        run.pipe(output_type="pt", **inputs[-1], **{**run.sampling, "num_inference_steps": 2})
    seconds = [[] for _ in runs]
    for round_ in range(max(run.repeats for run in runs)):
        for run, run_inputs, times in zip(runs, inputs, seconds, strict=True):
            if round_ >= run.repeats:
                continue
            start = time.perf_counter()
            run.pipe(**run_inputs, generator=torch.Generator().manual_seed(seed), output_type="pt", **run.sampling)
            times.append(time.perf_counter() - start)
    return [statistics.median(times) for times in seconds]


def score(
    pipe: MnistDiffusionPipeline,
    classifier,
    reference: ReferenceFeatures,
    args: argparse.Namespace,
    num_samples: int,
    style: bool,
    **sampling,
) -> list[EvaluationResult]:
    """One evaluation per seed of `args.seeds` (style control on the first only, when asked and `style`)."""
    return [
        evaluate(
            pipe,
            num_samples,
            classifier=classifier,
            reference=reference,
            conditioning=args.conditioning,
            seed=seed,
            batch_size=min(num_samples, 250),
            style_samples_per_request=args.style_samples_per_request if style and i == 0 else 0,
            **sampling,
        )
        for i, seed in enumerate(args.seeds)
    ]


def main() -> None:
    args = parse_args()
    pipe = MnistDiffusionPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    guidance = (
        args.guidance_scale or inspect.signature(MnistDiffusionPipeline.__call__).parameters["guidance_scale"].default
    )
    test = prepare_training_data(load_split(args.dataset_name, split="test"))
    classifier = default_classifier(test.label_names)
    reference = ReferenceFeatures.embed(classifier, test.images, test.labels)  # once for every row and seed
    runs = []
    samplers = [(*sampler, 1.0) for sampler in SAMPLERS if sampler[0] in args.samplers]
    samplers += [(*SAMPLERS[-1], stop) for stop in args.guidance_stop]
    for name, scheduler_cls, steps, stop in samplers:
        variant = MnistDiffusionPipeline.from_pipe(pipe, scheduler=scheduler_cls.from_config(pipe.scheduler.config))
        variant.set_progress_bar_config(disable=True)
        num_samples = args.ddpm_num_samples if name == "DDPM" else args.num_samples
        label = f"{name}-{steps}, guidance {guidance:g}" + (f" on the first {stop:.0%} of steps" if stop < 1 else "")
        runs.append(
            SamplerRun(
                label,
                variant,
                dict(guidance_scale=guidance, guidance_stop=stop, num_inference_steps=steps),
                batch_size=min(args.batch_size, num_samples),  # DDPM-1000 is timed on fewer images when asked to
                num_samples=num_samples,
                repeats=1 if name == "DDPM" else args.repeats,
                style=name == "DPM-Solver++" and stop == 1,
            )
        )
    if args.fast_model:
        fast = MnistDiffusionPipeline.from_pretrained(args.fast_model)
        fast.set_progress_bar_config(disable=True)
        for steps in args.fast_steps:
            student, subfolder = fast, "unet"
            if (Path(args.fast_model) / fast_unet_subfolder(steps)).is_dir():  # a UNet per step count, as shipped
                subfolder = fast_unet_subfolder(steps)
                unet = MnistUNet2DConditionModel.from_pretrained(args.fast_model, subfolder=subfolder)
                student = MnistDiffusionPipeline.from_pipe(fast, unet=unet)
            label = (
                f"few-step student ({subfolder}), {type(fast.scheduler).__name__}-{steps}, "
                f"guidance {args.fast_guidance_scale:g}"
            )
            sampling = dict(guidance_scale=args.fast_guidance_scale, num_inference_steps=steps)
            runs.append(
                SamplerRun(label, student, sampling, args.batch_size, args.num_samples, args.repeats, style=True)
            )
    timings = interleaved_timings(runs, args.seeds[0], args.conditioning)
    rows = []  # (sampler, images per call, median seconds, scored samples, results per seed)
    for run, seconds in zip(runs, timings, strict=True):
        results = score(run.pipe, classifier, reference, args, run.num_samples, style=run.style, **run.sampling)
        rows.append((run.name, run.batch_size, seconds, run.num_samples, results))
        print(run.name, seconds, [(r.accuracy, r.classifier_fid) for r in results], flush=True)

    floors = [result.classifier_fid_floor for result in rows[0][4]]
    # seconds per image of DPM-Solver++-20 with guidance on every step, the speed-up's reference
    seconds_per_image = next(
        (s / b for sampler, b, s, *_ in rows if sampler.startswith("DPM-Solver++-20") and "first" not in sampler), None
    )
    seeds = f"seed {args.seeds[0]}" if len(args.seeds) == 1 else f"mean over seeds {', '.join(map(str, args.seeds))}"
    print(
        f"\nSampling on {torch.get_num_threads()} CPU threads, batched CFG, {args.model} and "
        f"{args.fast_model or '-'}; {args.conditioning} conditioning, {seeds}; "
        f"classifier FID floor {mean_and_range(floors, '.1f')}:\n"
    )
    print(
        "| sampler | images per call | median s | images/s | speed-up vs DPM-Solver++-20 | scored samples | "
        "cond. accuracy | classifier FID | x floor | style strict (min-max over requests) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    accuracy_format = ".1f" if len(args.seeds) == 1 else ".2f"
    for sampler, batch_size, seconds, num_samples, results in rows:
        fids = [result.classifier_fid for result in results]
        style = results[0].style_control
        strict = [request.strict_agreement for request in style.requests] if style else []
        print(
            f"| {sampler} | {batch_size} | {seconds:.2f} | {batch_size / seconds:.1f} | "
            f"{f'{seconds_per_image * batch_size / seconds:.1f}x' if seconds_per_image else '-'} | {num_samples} | "
            f"{mean_and_range([result.accuracy for result in results], accuracy_format, 100, '%')} | "
            f"{mean_and_range(fids, '.1f')} | {mean(fids) / mean(floors):.2f} | "
            f"{f'{100 * min(strict):.0f}-{100 * max(strict):.0f}%' if strict else '-'} |"
        )


if __name__ == "__main__":
    main()
