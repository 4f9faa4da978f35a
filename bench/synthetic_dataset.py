"""Benchmark: generate-dataset's images/s against the bare pipeline, and the CAS of its datasets against real MNIST."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from mnist_diffusion.cas import ClassificationAccuracyScore, read_or_generate_dataset, subset_accuracy
from mnist_diffusion.data import load_split, prepare_training_data
from mnist_diffusion.loading import open_fast_pipeline, open_pipeline
from mnist_diffusion.pretrained import FAST_GUIDANCE_SCALE, FAST_STEPS
from mnist_diffusion.synthetic_dataset import dataset_settings, generate_dataset

# The released model at its recommended setting (README headline table) and the 4-step student at its defaults.
MODELS = {
    "release": {"scheduler": "dpm", "num_inference_steps": 20, "guidance_scale": 1.4},
    "student": {"scheduler": None, "num_inference_steps": FAST_STEPS, "guidance_scale": FAST_GUIDANCE_SCALE},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=sorted(MODELS))
    parser.add_argument("--throughput_images", type=int, default=1000, help="Images per timed run (0 skips).")
    parser.add_argument("--batch_size", type=int, default=64, help="Images per pipeline call on both sides.")
    parser.add_argument("--cas_images", type=int, nargs="*", default=[10_000], help="Images per CAS side.")
    parser.add_argument("--cas_steps", type=int, default=4000, help="Classifier updates per CAS side.")
    parser.add_argument("--dataset_name", default="../shared/data/mnist", help="Real MNIST (train and test).")
    parser.add_argument("--output_root", default=None, help="Keep the generated datasets here (default: a temp dir).")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def open_model(name: str):
    settings = MODELS[name]
    if name == "student":
        pipe = open_fast_pipeline(settings["num_inference_steps"])
    else:
        pipe = open_pipeline(None, settings["scheduler"])
    pipe.set_progress_bar_config(disable=True)
    sampling = {k: v for k, v in settings.items() if k != "scheduler"}
    return pipe, sampling


def time_pipeline_loop(pipe, sampling: dict, num_images: int, batch_size: int, seed: int) -> float:
    """Seconds for the bare pipeline to draw the images generate-dataset draws, in the same batches."""
    settings = dataset_settings(pipe, num_images, seed=seed, shard_size=num_images, **sampling)
    start = time.perf_counter()
    for first in range(0, num_images, batch_size):
        images = range(first, min(first + batch_size, num_images))
        pipe(
            prompt=[settings.prompts[i % len(settings.prompts)] for i in images] if settings.prompts else None,
            class_labels=[settings.class_labels[i % len(settings.class_labels)] for i in images],
            generator=[torch.Generator().manual_seed(seed + i) for i in images],
            **sampling,
        )
    return time.perf_counter() - start


class TimedPipeline:
    """The pipeline, with the seconds spent inside its calls added up in `seconds`."""

    def __init__(self, pipe):
        self.pipe, self.seconds = pipe, 0.0

    def __getattr__(self, name: str):
        return getattr(self.pipe, name)

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        output = self.pipe(*args, **kwargs)
        self.seconds += time.perf_counter() - start
        return output


def time_generate_dataset(
    pipe, sampling: dict, folder: Path, num_images: int, batch_size: int, seed: int
) -> tuple[float, float]:
    """Seconds of a generate-dataset run, and the seconds of it spent inside the pipeline's calls."""
    timed = TimedPipeline(pipe)
    start = time.perf_counter()
    generate_dataset(timed, folder, num_images, batch_size=batch_size, seed=seed, **sampling)
    return time.perf_counter() - start, timed.seconds


def main() -> None:
    args = parse_args()
    root = Path(args.output_root or tempfile.mkdtemp(prefix="synthetic-bench-"))
    results = {}
    splits = ("train", "test") if args.cas_images else ()
    real = {split: prepare_training_data(load_split(args.dataset_name, split=split)) for split in splits}
    # The real side is the same for every model: trained once per size.
    cas = {"num_steps": args.cas_steps, "seed": args.seed}
    real_accuracy = {n: subset_accuracy(real["train"], real["test"], num_images=n, **cas) for n in args.cas_images}
    print("real", json.dumps(real_accuracy), flush=True)
    for name in args.models:
        pipe, sampling = open_model(name)
        result = results.setdefault(name, {"sampling": sampling})
        if args.throughput_images:
            # The load of a shared machine drifts between runs: the main figure is the share of generate-dataset's
            # own time spent inside the pipeline (the rest is encoding, writing and bookkeeping), measured in one run.
            # A bare loop before and after gives the pipeline's images/s for reference.
            folder = root / f"{name}-throughput"
            shutil.rmtree(folder, ignore_errors=True)
            n, b, s = args.throughput_images, args.batch_size, args.seed
            loop = [time_pipeline_loop(pipe, sampling, n, b, s)]
            dataset_seconds, pipeline_seconds = time_generate_dataset(pipe, sampling, folder, n, b, s)
            loop.append(time_pipeline_loop(pipe, sampling, n, b, s))
            result["throughput"] = {
                "images": n,
                "generate_dataset_images_per_s": round(n / dataset_seconds, 1),
                "pipeline_images_per_s_inside_it": round(n / pipeline_seconds, 1),
                "share_in_pipeline": round(pipeline_seconds / dataset_seconds, 3),
                "bare_loop_images_per_s": [round(n / t, 1) for t in loop],
            }
            print(name, json.dumps(result["throughput"]), flush=True)
        for num_images in args.cas_images:
            folder = root / f"{name}-{num_images}"
            start = time.perf_counter()  # generation (unless the folder is finished) and reading it back
            synthetic = read_or_generate_dataset(
                pipe, folder, num_images, batch_size=args.batch_size, seed=args.seed, **sampling
            )
            generation_seconds = time.perf_counter() - start
            score = ClassificationAccuracyScore(
                synthetic_accuracy=subset_accuracy(synthetic, real["test"], num_images=num_images, **cas),
                real_accuracy=real_accuracy[num_images],
                num_images=num_images,
                num_steps=args.cas_steps,
                num_test_images=len(real["test"].labels),
            )
            result[f"cas_{num_images}"] = {**score.to_dict(), "generation_seconds": round(generation_seconds, 1)}
            print(name, num_images, json.dumps(result[f"cas_{num_images}"]), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
