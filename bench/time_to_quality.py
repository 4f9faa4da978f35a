"""Benchmark: the default training command vs the previous default and the stock diffusers recipe, same CPU budget."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from statistics import fmean as mean

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel

from mnist_diffusion import MnistDiffusionPipeline
from mnist_diffusion.data import load_split, prepare_training_data
from mnist_diffusion.evaluation import evaluate, mean_and_range

REPO = Path(__file__).resolve().parents[1]

#: The default training command's settings until 2026-12-02 (Muon at batch 64, learning rate 2e-3, 5 epochs), passed
#: explicitly to train the previous default.
PREVIOUS_DEFAULT_FLAGS = ("--train_batch_size", "64", "--learning_rate", "2e-3", "--num_epochs", "5")
PREVIOUS_DEFAULT = "previous default (Muon, batch 64, 5 epochs; until 2026-12-02)"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset_name", default="../shared/data/mnist", help="MNIST: Hub id or local folder.")
    parser.add_argument(
        "--budget_minutes", type=float, default=15.0, help="The stock recipe's training wall clock; ours must fit it."
    )
    parser.add_argument("--output_dir", default="bench-outputs/time_to_quality")
    parser.add_argument("--num_samples", type=int, default=1000, help="Samples scored per setting and seed.")
    parser.add_argument("--num_inference_steps", type=int, default=20, help="DPM-Solver++ steps for every model.")
    parser.add_argument(
        "--guidance", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0], help="The curve: guidance scales scored."
    )
    parser.add_argument("--curve_seeds", type=int, nargs="+", default=[0], help="Evaluation seeds of the curve.")
    parser.add_argument(
        "--setting", type=float, default=1.5, help="The default command's headline guidance, scored over --seeds."
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="Seeds of the headline row.")
    parser.add_argument("--seed", type=int, default=0, help="Training seed.")
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="Score the models of a finished run in --output_dir again (e.g. at other guidance scales) without "
        "training; its training times and steps are read from its training.json.",
    )
    args = parser.parse_args()
    if args.budget_minutes <= 0 or args.num_samples < 10:
        raise ValueError(
            f"--budget_minutes {args.budget_minutes}, --num_samples {args.num_samples}; expected > 0 and >= 10."
        )
    return args


def train_command(args: argparse.Namespace, output_dir: Path, flags: tuple[str, ...]) -> tuple[float, int]:
    """`accelerate launch training/train.py` with the data, output folder and seed, plus `flags`; (seconds, steps)."""
    command = [
        *("accelerate", "launch", "--config_file", str(REPO / "training/configs/single_cpu.yaml")),
        *(str(REPO / "training/train.py"), "--dataset_name", args.dataset_name, "--output_dir", str(output_dir)),
        *("--seed", str(args.seed), "--report_to", "none", *flags),
    ]
    print(" ".join(command), flush=True)
    log_path = output_dir.parent / f"{output_dir.name}.log"
    start = time.perf_counter()
    with open(log_path, "w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    steps = re.search(r"total optimization steps = (\d+)", log_path.read_text())
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


def score(
    args: argparse.Namespace, model_dir: Path, guidance_scale: float, seeds: list[int], test, cache: dict
) -> dict:
    """Sample `num_samples` per seed with DPM-Solver++ on the model's own schedule (class label and, where the model
    reads text, its class prompt); the mean accuracy and classifier FID over the seeds, and the FID floor. Each
    (model, guidance, seed) is evaluated once: `cache` keeps the results for the rows that share one."""
    pipe = MnistDiffusionPipeline.from_pretrained(model_dir)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    results = []
    for seed in seeds:
        key = (str(model_dir), guidance_scale, seed)
        if key not in cache:
            cache[key] = evaluate(
                pipe,
                args.num_samples,
                reference_images=test.images,
                reference_labels=test.labels,
                conditioning="label" if pipe.text_encoder is None else "label+prompt",
                guidance_scale=guidance_scale,
                num_inference_steps=args.num_inference_steps,
                seed=seed,
                style_samples_per_request=0,
            )
        results.append(cache[key])
    accuracies = [result.accuracy for result in results]
    fids = [result.classifier_fid for result in results]
    floor = mean([result.classifier_fid_floor for result in results])
    return {
        "guidance": guidance_scale,
        "seeds": seeds,
        "conditional_accuracy": mean(accuracies),
        "accuracy_text": mean_and_range(accuracies, ".2f" if len(seeds) > 1 else ".1f", 100, "%"),
        "classifier_fid": mean(fids),
        "fid_text": mean_and_range(fids, ".1f"),
        "classifier_fid_floor": floor,
        "fid_ratio": mean(fids) / floor,
    }


def main() -> None:
    args = parse_args()
    output = Path(args.output_dir)
    recipes = {
        "default command": (output / "ours", ()),
        PREVIOUS_DEFAULT: (output / "previous", PREVIOUS_DEFAULT_FLAGS),
        "stock diffusers recipe": (output / "stock", None),
    }
    if args.rescore:
        if not (output / "training.json").is_file():
            raise ValueError(f"--rescore: {str(output / 'training.json')!r} not found; expected a finished run there.")
        trained = json.loads((output / "training.json").read_text())
    else:
        if output.exists() and any(output.iterdir()):
            raise ValueError(f"--output_dir {str(output)!r} is not empty; expected a new folder.")
        output.mkdir(parents=True, exist_ok=True)
        trained = {}
        for name, (folder, flags) in recipes.items():
            if flags is None:
                seconds, steps = train_stock(args, folder, 60 * args.budget_minutes)
            else:
                seconds, steps = train_command(args, folder, flags)
            trained[name] = {"train_minutes": seconds / 60, "steps": steps}
            print(f"{name}: {steps} steps in {seconds / 60:.1f} min", flush=True)
        (output / "training.json").write_text(json.dumps(trained, indent=2))

    test = prepare_training_data(load_split(args.dataset_name, split="test"))
    scored = [("default command", args.setting, args.seeds)]
    for name in ("default command", PREVIOUS_DEFAULT):
        scored += [(name, guidance, args.curve_seeds) for guidance in args.guidance]
    scored.append(("stock diffusers recipe", 1.0, args.curve_seeds))
    rows, cache = [], {}
    for name, guidance, seeds in scored:
        result = score(args, recipes[name][0], guidance, seeds, test, cache)
        rows.append({"recipe": name, **trained[name], **result})
        print(json.dumps(rows[-1]), flush=True)
    (output / "results.json").write_text(json.dumps(rows, indent=2))

    print(
        f"\nTime to quality, {torch.get_num_threads()} CPU threads; the stock recipe trains for "
        f"{args.budget_minutes:g} min; {args.num_samples} samples per seed, DPM-Solver++-{args.num_inference_steps}, "
        "class label + class prompt (label only for the stock model), scored by the shipped classifier. Targets: "
        ">= 99.5% and classifier FID <= 1.5x its floor at one setting.\n"
    )
    print("| recipe | train min | steps | guidance | seeds | accuracy | classifier FID | x floor | both targets |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        met = row["conditional_accuracy"] >= 0.995 and row["fid_ratio"] <= 1.5
        print(
            f"| {row['recipe']} | {row['train_minutes']:.1f} | {row['steps']} | {row['guidance']:g} | "
            f"{','.join(map(str, row['seeds']))} | {row['accuracy_text']} | {row['fid_text']} | "
            f"{row['fid_ratio']:.2f} | {'yes' if met else 'no'} |"
        )
    minutes = trained["default command"]["train_minutes"]
    if minutes > args.budget_minutes:
        print(f"\nNote: the default command took {minutes:.1f} min, over the {args.budget_minutes:g} min budget.")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
