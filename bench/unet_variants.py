"""Benchmark: UNet sizes trained for the same CPU time budget: parameters, training images/s, quality in one table."""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import torch
from diffusers import DPMSolverMultistepScheduler

from mnist_diffusion import MnistDiffusionPipeline, MnistUNet2DConditionModel
from mnist_diffusion.data import load_split, prepare_training_data
from mnist_diffusion.evaluation import evaluate

REPO = Path(__file__).resolve().parents[1]
BATCH = 128
# name -> (block_out_channels, attention_levels, patch_size, upsample_type), as training/train.py flags
VARIANTS = {
    "tiny": ("8,16,32", "0,1,1", 1, "interpolate"),
    "small (the default before 2026-11-30)": ("16,32,64", "0,1,1", 1, "interpolate"),
    "patched": ("32,64", "0,1", 2, "interpolate"),
    "patched-convT (released and default layout)": ("32,64", "0,1", 2, "conv_transpose"),
    "large": ("32,64,128", "0,1,1", 1, "interpolate"),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset_name", default="../shared/data/mnist", help="MNIST: Hub id or local folder.")
    parser.add_argument("--budget_minutes", type=float, default=5.0, help="Training wall-clock per variant.")
    parser.add_argument("--output_dir", default="bench-outputs/unet_variants")
    parser.add_argument("--num_samples", type=int, default=500, help="Samples scored per variant.")
    parser.add_argument("--guidance_scale", type=float, default=3.0)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), help=f"Any of {list(VARIANTS)}.")
    args = parser.parse_args()
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown or args.budget_minutes <= 0:
        raise ValueError(f"Unknown variants {unknown} (expected {list(VARIANTS)}) or --budget_minutes <= 0.")
    return args


def build_unet(channels: str, attention: str, patch_size: int, upsample_type: str) -> MnistUNet2DConditionModel:
    """The UNet train.py builds for these flags (64-d text states, ten classes plus the null class)."""
    return MnistUNet2DConditionModel(
        block_out_channels=tuple(int(c) for c in channels.split(",")),
        attention_levels=tuple(a == "1" for a in attention.split(",")),
        cross_attention_dim=64,
        num_class_embeds=11,
        patch_size=patch_size,
        upsample_type=upsample_type,
    )


def training_images_per_second(unet: MnistUNet2DConditionModel, repeats: int = 5) -> float:
    """Forward + backward + AdamW step on a batch of 128 (timed after one warm-up step)."""
    optimizer = torch.optim.AdamW(unet.parameters())
    batch = {
        "sample": torch.randn(BATCH, 1, 28, 28),
        "timestep": torch.randint(0, 1000, (BATCH,)),
        "encoder_hidden_states": torch.randn(BATCH, 16, 64),
        "class_labels": torch.randint(0, 11, (BATCH,)),
    }
    for i in range(repeats + 1):
        if i == 1:
            start = time.perf_counter()
        unet(**batch).sample.square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    return repeats * BATCH / (time.perf_counter() - start)


def main() -> None:
    args = parse_args()
    output = Path(args.output_dir)
    if output.exists() and any(output.iterdir()):
        raise ValueError(f"--output_dir {str(output)!r} is not empty; expected a new folder.")
    test = prepare_training_data(load_split(args.dataset_name, split="test"))
    rows = []
    for name in args.variants:
        channels, attention, patch_size, upsample_type = VARIANTS[name]
        unet = build_unet(channels, attention, patch_size, upsample_type)
        params = sum(p.numel() for p in unet.parameters())
        speed = training_images_per_second(unet)
        # Fit the step count (and so the full warmup + cosine schedule) to the budget; 10% margin for validation.
        steps = max(50, int(0.9 * args.budget_minutes * 60 * speed / BATCH))
        folder = output / name.split()[0]
        command = [
            *("accelerate", "launch", "--config_file", str(REPO / "training/configs/single_cpu.yaml")),
            *(str(REPO / "training/train.py"), "--dataset_name", args.dataset_name, "--output_dir", str(folder)),
            *("--block_out_channels", channels, "--attention_levels", attention, "--patch_size", str(patch_size)),
            *("--upsample_type", upsample_type, "--train_batch_size", str(BATCH)),
            *("--max_train_steps", str(steps), "--lr_warmup_steps", str(min(100, steps // 10)), "--report_to", "none"),
        ]
        print(f"{name}: {params / 1e6:.2f}M parameters, {speed:.0f} img/s -> {steps} steps", flush=True)
        start = time.perf_counter()
        output.mkdir(parents=True, exist_ok=True)
        with open(output / f"{folder.name}.log", "w") as log:
            subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
        minutes = (time.perf_counter() - start) / 60
        pipe = MnistDiffusionPipeline.from_pretrained(folder)
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        result = evaluate(
            pipe,
            args.num_samples,
            reference_images=test.images,
            reference_labels=test.labels,
            conditioning="label",
            guidance_scale=args.guidance_scale,
            num_inference_steps=20,
            style_samples_per_request=0,
        )
        rows.append(
            {
                "variant": name,
                "block_out_channels": channels,
                "attention_levels": attention,
                "patch_size": patch_size,
                "upsample_type": upsample_type,
                "parameters_m": params / 1e6,
                "train_images_per_second": speed,
                "steps": steps,
                "train_minutes": minutes,
                "conditional_accuracy": result.accuracy,
                "classifier_fid": result.classifier_fid,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    (output / "results.json").write_text(json.dumps(rows, indent=2))
    print(f"\nUNet variants, {args.budget_minutes:g} min of training each on {torch.get_num_threads()} CPU threads,")
    print(f"{args.num_samples} samples, DPM-Solver++-20, guidance {args.guidance_scale:g}, shipped classifier:\n")
    print(
        "| variant | channels | attention | patch | upsampling | params | train img/s | steps | minutes | "
        "cond. accuracy | classifier FID |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['block_out_channels']} | {r['attention_levels']} | {r['patch_size']} | "
            f"{r['upsample_type']} | {r['parameters_m']:.2f}M | {r['train_images_per_second']:.0f} | {r['steps']} | "
            f"{r['train_minutes']:.1f} | {100 * r['conditional_accuracy']:.1f}% | {r['classifier_fid']:.1f} |"
        )


if __name__ == "__main__":
    main()
