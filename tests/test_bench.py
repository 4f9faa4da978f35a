"""Smoke tests of benchmark scripts that call into the training code, so that they keep up with its signatures."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import load_script

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("optimizer", ["muon", "adamw"])
def test_train_throughput_runs_the_default_training_step(optimizer):
    result = subprocess.run(
        [sys.executable, "bench/train_throughput.py", "--batch_size", "8", "--steps", "1", "--precisions", "no", "--",
         "--resolution", "8", "--block_out_channels", "16,32", "--attention_head_dim", "16", "--optimizer", optimizer],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    rate = re.search(r"^fp32: ([0-9.]+) images/s$", result.stdout, re.MULTILINE)
    assert rate and float(rate.group(1)) > 0, result.stdout


def test_lora_bench_stroke_shapes_ignore_stroke_width():
    bench_lora = load_script("bench", "lora")
    thin, thick = torch.zeros(2, 1, 28, 28, dtype=torch.uint8)
    thin[0, 4:24, 14] = 255
    thick[0, 4:24, 12:17] = 255
    shapes = bench_lora.stroke_shapes(torch.stack([thin, thick]))
    assert shapes.dtype == torch.uint8 and set(shapes.unique().tolist()) == {0, 255}
    # Both bars become the same three-pixel-wide stroke down column 14 (thinning may trim the thick bar's ends).
    assert torch.equal(shapes[0, 0, 6:22], shapes[1, 0, 6:22])
    assert shapes[1, 0, 6:22].sum(dim=1).eq(3 * 255).all()
    assert shapes[1, 0, :, 14].sum() > 0 and shapes[1, 0, :, 10].sum() == 0
