"""Smoke tests of benchmark scripts that call into the training code, so that they keep up with its signatures."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

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
