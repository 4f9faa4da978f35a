"""Benchmark: training and inference images/s of MnistUNet2DConditionModel vs a stock UNet2DConditionModel on CPU."""

from __future__ import annotations

import argparse
import time

import torch
from diffusers import UNet2DConditionModel
from torch.utils.flop_counter import FlopCounterMode

from mnist_diffusion import MnistUNet2DConditionModel

TEXT_DIM, TOKENS, CLASSES = 64, 16, 10


def build_models() -> dict[str, torch.nn.Module]:
    """Our UNet with 2x2 patches (levels at 14x14 and 7x7), with transposed-convolution upsampling (the released
    layout) and with nearest + conv upsampling, the same UNet at full resolution (levels at 28x28 and 14x14), and a
    stock UNet2DConditionModel of the same widths and attention levels (full resolution)."""
    torch.manual_seed(0)
    common = {
        "block_out_channels": (32, 64),
        "attention_levels": (False, True),
        "cross_attention_dim": TEXT_DIM,
        "num_class_embeds": CLASSES + 1,
    }
    stock = UNet2DConditionModel(
        sample_size=28,
        in_channels=1,
        out_channels=1,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=32,
        norm_num_groups=8,
        num_class_embeds=CLASSES + 1,
    )
    return {
        "ours, patch 2, conv-transpose up (released)": MnistUNet2DConditionModel(
            patch_size=2, upsample_type="conv_transpose", **common
        ),
        "ours, patch 2, interpolate up": MnistUNet2DConditionModel(patch_size=2, **common),
        "ours, patch_size 1": MnistUNet2DConditionModel(patch_size=1, **common),
        "UNet2DConditionModel (stock)": stock,
    }


def make_batch(batch_size: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "sample": torch.randn(batch_size, 1, 28, 28, generator=generator),
        "timestep": torch.randint(0, 1000, (batch_size,), generator=generator),
        "encoder_hidden_states": torch.randn(batch_size, TOKENS, TEXT_DIM, generator=generator),
        "class_labels": torch.randint(0, CLASSES + 1, (batch_size,), generator=generator),
        "encoder_attention_mask": (torch.arange(TOKENS)[None] < 6).expand(batch_size, -1).long(),
    }


def macs_per_image(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> float:
    """Multiply-accumulates of one inference forward per image, counted by torch's FLOP counter (convolutions,
    matrix products and attention; a multiply-accumulate is two FLOPs)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(**batch)
    return counter.get_total_flops() / 2 / batch["sample"].shape[0]


def images_per_second(step, batch_size: int, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return batch_size * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the target laptop has 2 cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch = make_batch(args.batch_size)
    print(f"batch {args.batch_size}, 28x28x1, text {TOKENS}x{TEXT_DIM} + class, {args.threads} threads, fp32")
    print(f"{'model':44s} {'params':>10s} {'MMAC/img':>9s} {'train img/s':>12s} {'infer img/s':>12s}")
    results = {}
    for name, model in build_models().items():
        params = sum(p.numel() for p in model.parameters())
        macs = macs_per_image(model.eval(), batch)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        target = torch.randn_like(batch["sample"])

        def train_step(model=model, optimizer=optimizer, target=target):
            loss = torch.nn.functional.mse_loss(model(**batch).sample, target)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        def infer_step(model=model):
            with torch.no_grad():
                model(**batch)

        model.train()
        train = images_per_second(train_step, args.batch_size, warmup=1, repeats=args.repeats)
        model.eval()
        infer = images_per_second(infer_step, args.batch_size, warmup=1, repeats=args.repeats)
        results[name] = (train, infer)
        print(f"{name:44s} {params / 1e6:9.2f}M {macs / 1e6:9.1f} {train:12.1f} {infer:12.1f}")
    stock_train, stock_infer = results["UNet2DConditionModel (stock)"]
    for name, (train, infer) in list(results.items())[:-1]:
        print(f"{name} vs stock: training {train / stock_train:.2f}x, inference {infer / stock_infer:.2f}x")


if __name__ == "__main__":
    main()
