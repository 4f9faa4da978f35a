"""Benchmark: this project's default training recipe vs the stock diffusers recipe after the same CPU time budget."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel

from mnist_diffusion import MnistDiffusionPipeline
from mnist_diffusion.data import load_split, prepare_training_data
from mnist_diffusion.evaluation import evaluate

REPO = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset_name", default="../shared/data/mnist", help="MNIST: Hub id or local folder.")
    parser.add_argument("--budget_minutes", type=float, default=20.0, help="Training wall-clock per recipe.")
    parser.add_argument("--output_dir", default="bench-outputs/time_to_quality")
    parser.add_argument("--num_samples", type=int, default=1000, help="Samples scored per model.")
    parser.add_argument("--num_inference_steps", type=int, default=20, help="DPM-Solver++ steps for every model.")
    parser.add_argument("--guidance_scale", type=float, default=3.0, help="Ours (the stock model has no CFG).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="Score the models of a finished run in --output_dir again (e.g. at another --guidance_scale) without "
        "training; its training times and steps are read from its results.json.",
    )
    args = parser.parse_args()
    if args.budget_minutes <= 0 or args.num_samples < 10:
        raise ValueError("--budget_minutes must be > 0 and --num_samples >= 10.")
    return args


def train_ours(args: argparse.Namespace, output_dir: Path) -> tuple[float, int]:
    """The README's default training command (only data, output folder and seed given); returns (seconds, steps)."""
    command = [
        *("accelerate", "launch", "--config_file", str(REPO / "training/configs/single_cpu.yaml")),
        *(str(REPO / "training/train.py"), "--dataset_name", args.dataset_name, "--output_dir", str(output_dir)),
        *("--seed", str(args.seed), "--report_to", "none"),
    ]
    print("ours:", " ".join(command), flush=True)
    start = time.perf_counter()
    with open(output_dir.parent / "ours.log", "w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    steps = re.search(r"total optimization steps = (\d+)", (output_dir.parent / "ours.log").read_text())
    return seconds, int(steps.group(1))


def build_stock_recipe() -> tuple[UNet2DModel, DDPMScheduler]:
    """The Hugging Face diffusion course's class-conditioned MNIST recipe, with UNet2DModel's own class embedding."""
    unet = UNet2DModel(
        sample_size=28,
        in_channels=1,
        out_channels=1,
        layers_per_block=2,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        num_class_embeds=11,  # ten digits + the row MnistDiffusionPipeline treats as "null" (never trained here)
    )
    return unet, DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")


def train_stock(args: argparse.Namespace, output_dir: Path, budget_seconds: float) -> tuple[float, int]:
    """Train the course recipe (Adam 1e-3, batch 128, epsilon MSE) until `budget_seconds` run out; save a pipeline."""
    torch.manual_seed(args.seed)
    data = prepare_training_data(load_split(args.dataset_name, split="train"))
    images = data.images.float() / 127.5 - 1.0
    unet, scheduler = build_stock_recipe()
    optimizer = torch.optim.Adam(unet.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(args.seed)
    step, start = 0, time.perf_counter()
    while time.perf_counter() - start < budget_seconds:
        for batch in torch.randperm(len(images), generator=generator).split(128):
            x0, labels = images[batch], data.labels[batch]
            noise = torch.randn(x0.shape, generator=generator)
            timesteps = torch.randint(0, 1000, (len(batch),), generator=generator)
            noisy = scheduler.add_noise(x0, noise, timesteps)
            loss = F.mse_loss(unet(noisy, timesteps, class_labels=labels).sample, noise)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step % 50 == 0:
                print(f"stock: step {step}, loss {loss.item():.4f}, {time.perf_counter() - start:.0f}s", flush=True)
            if time.perf_counter() - start >= budget_seconds:
                break
    seconds = time.perf_counter() - start
    MnistDiffusionPipeline(unet=unet.eval(), scheduler=scheduler, id2label=data.id2label).save_pretrained(output_dir)
    return seconds, step


def score(args: argparse.Namespace, model_dir: Path, guidance_scale: float, test) -> dict:
    """Sample `num_samples` (spread over the digits) with DPM-Solver++ on the model's own schedule; score them."""
    pipe = MnistDiffusionPipeline.from_pretrained(model_dir)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    result = evaluate(
        pipe,
        args.num_samples,
        reference_images=test.images,
        reference_labels=test.labels,
        conditioning="label",
        guidance_scale=guidance_scale,
        num_inference_steps=args.num_inference_steps,
        seed=args.seed,
        style_samples_per_request=0,
    )
    return {
        "conditional_accuracy": result.accuracy,
        "classifier_fid": result.classifier_fid,
        "classifier_fid_floor": result.classifier_fid_floor,
    }


def main() -> None:
    args = parse_args()
    output = Path(args.output_dir)
    budget = args.budget_minutes * 60
    rows = []
    if args.rescore:
        if not (output / "results.json").is_file():
            raise ValueError(f"--rescore: {str(output / 'results.json')!r} not found; expected a finished run there.")
        trained = {row["recipe"]: row for row in json.loads((output / "results.json").read_text())}
        ours, stock = (trained[recipe] for recipe in ("ours (default command)", "stock diffusers recipe"))
        ours_seconds, ours_steps = 60 * ours["train_minutes"], ours["steps"]
        stock_seconds, stock_steps = 60 * stock["train_minutes"], stock["steps"]
    else:
        if output.exists() and any(output.iterdir()):
            raise ValueError(f"--output_dir {str(output)!r} is not empty; expected a new folder.")
        output.mkdir(parents=True, exist_ok=True)
        ours_seconds, ours_steps = train_ours(args, output / "ours")
        stock_seconds, stock_steps = train_stock(args, output / "stock", budget)
    test = prepare_training_data(load_split(args.dataset_name, split="test"))
    for name, folder, seconds, steps, guidance in [
        ("ours (default command)", output / "ours", ours_seconds, ours_steps, args.guidance_scale),
        ("ours, no guidance", output / "ours", ours_seconds, ours_steps, 1.0),
        ("stock diffusers recipe", output / "stock", stock_seconds, stock_steps, 1.0),
    ]:
        rows.append({"recipe": name, "train_minutes": seconds / 60, "steps": steps, "guidance": guidance})
        rows[-1].update(score(args, folder, guidance, test))
        print(json.dumps(rows[-1]), flush=True)
    results_name = f"results_rescored_guidance{args.guidance_scale:g}.json" if args.rescore else "results.json"
    (output / results_name).write_text(json.dumps(rows, indent=2))
    threads = torch.get_num_threads()
    print(f"\nTime to quality, {threads} CPU threads, budget {args.budget_minutes:g} min per recipe,")
    print(f"{args.num_samples} samples, DPM-Solver++-{args.num_inference_steps}, scored by the shipped classifier:\n")
    print("| recipe | train min | steps | guidance | conditional accuracy | classifier FID (floor) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['recipe']} | {row['train_minutes']:.1f} | {row['steps']} | {row['guidance']:g} | "
            f"{100 * row['conditional_accuracy']:.1f}% | "
            f"{row['classifier_fid']:.1f} ({row['classifier_fid_floor']:.1f}) |"
        )
    if ours_seconds > budget:
        minutes = ours_seconds / 60
        print(f"\nNote: the default command took {minutes:.1f} min, over the {args.budget_minutes:g} min budget.")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
