"""Training throughput (images/s) of `training/train.py`'s default recipe, in fp32 and bf16, on this machine."""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import time


def measure(mixed_precision: str, batch_size: int, steps: int, warmup_steps: int, train_args: list[str]) -> float:
    r"""
    Images per second of full training steps (captions, text encoder, UNet forward and backward, `--optimizer`'s
    step, EMA) with the default arguments of `training/train.py` plus `train_args` (e.g. `--optimizer adamw`), on
    random 28x28 images of 10 classes.

    Runs in a fresh process per precision (accelerate keeps one mixed-precision setting per process).
    """
    import torch
    from accelerate import Accelerator
    from diffusers.training_utils import EMAModel

    from mnist_diffusion.data import ImageClassData
    from mnist_diffusion.training.optimization import optimizer_from_args
    from mnist_diffusion.training.text_to_image import (
        build_captioner,
        build_models,
        parse_args,
        resolve_text_encoder,
        trained_named_params,
        training_loss,
    )

    args = parse_args(["--output_dir", "unused", "--train_batch_size", str(batch_size), *train_args])
    torch.manual_seed(0)
    accelerator = Accelerator(mixed_precision=mixed_precision)
    images = torch.randint(0, 256, (batch_size, 1, args.resolution, args.resolution), dtype=torch.uint8)
    data = ImageClassData(images, torch.randint(0, 10, (batch_size,)), [str(i) for i in range(10)])
    resolve_text_encoder(args, data.label_names)
    tokenizer, text_encoder, unet, scheduler = build_models(args, num_classes=len(data.label_names))
    captioner = build_captioner(args, data, tokenizer)
    named_params = trained_named_params(args, unet, text_encoder)
    params = [param for _, param in named_params]
    optimizer, _ = optimizer_from_args(args, named_params, warmup_steps + steps, accelerator.num_processes)
    ema = EMAModel(params, decay=args.ema_max_decay, use_ema_warmup=True, power=args.ema_power)
    unet, text_encoder, optimizer = accelerator.prepare(unet, text_encoder, optimizer)
    batch = {"pixel_values": images.float() / 127.5 - 1, "labels": data.labels, "indices": torch.arange(batch_size)}
    for step in range(warmup_steps + steps):
        if step == warmup_steps:
            start = time.perf_counter()
        loss = training_loss(batch, args, captioner, text_encoder, unet, scheduler, accelerator)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(params, args.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(params)
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    """`python bench/train_throughput.py [--batch_size 64] [--steps 5] [-- extra training/train.py flags]`."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch_size", type=int, default=64, help="The training script's default.")
    parser.add_argument("--steps", type=int, default=5, help="Timed steps per precision.")
    parser.add_argument("--warmup_steps", type=int, default=1, help="Untimed steps first.")
    parser.add_argument("--precisions", default="no,bf16", help="Comma-separated accelerate mixed_precision values.")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="After `--`: flags for training/train.py.")
    args = parser.parse_args()
    if args.batch_size < 1 or args.steps < 1 or args.warmup_steps < 0:
        raise ValueError(
            f"Got --batch_size {args.batch_size}, --steps {args.steps}, --warmup_steps {args.warmup_steps}; expected "
            "positive batch size and steps and non-negative warmup steps."
        )
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, {args.steps} steps")
    context = multiprocessing.get_context("spawn")
    for precision in args.precisions.split(","):
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
            rate = pool.submit(measure, precision, args.batch_size, args.steps, args.warmup_steps, train_args).result()
        name = "fp32" if precision == "no" else precision
        print(f"{name}: {rate:.1f} images/s")


if __name__ == "__main__":
    main()
