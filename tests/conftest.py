"""Shared fixtures: tiny components built in code under `torch.manual_seed(0)`; nothing is downloaded."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from mnist_diffusion import (
    MnistDDPMScheduler,
    MnistDiffusionPipeline,
    MnistUNet2DConditionModel,
    build_caption_tokenizer,
    build_text_encoder,
)
from mnist_diffusion.classifier import MnistClassifier

DIGIT_NAMES = {str(i): str(i) for i in range(10)}
REPO_DIR = Path(__file__).resolve().parents[1]
# A two-level UNet at 8x8 (the 28x28 images are resized): a training step takes a fraction of a second.
TINY_TRAINING_ARGS = [
    "--resolution", "8", "--block_out_channels", "16,32", "--attention_levels", "0,1", "--attention_head_dim", "16",
    "--text_encoder_hidden_size", "32", "--train_batch_size", "16", "--validation_inference_steps", "2",
    "--validation_images_per_class", "2", "--report_to", "tensorboard", "--lr_warmup_steps", "1",
]  # fmt: skip


def load_script(folder: str, name: str) -> ModuleType:
    """`<folder>/<name>.py` of the repository as a module (its scripts are not part of the installed package)."""
    spec = importlib.util.spec_from_file_location(f"{folder}_{name}", REPO_DIR / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_training_script(name: str) -> ModuleType:
    """`training/<name>.py` as a module."""
    return load_script("training", name)


def make_digit_dataset(num_samples: int = 48, num_classes: int = 4, seed: int = 0) -> datasets.Dataset:
    """28x28 grayscale images of bars whose position depends on the label, with a `ClassLabel` column."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(num_samples):
        label = i % num_classes
        array = np.zeros((28, 28), dtype=np.uint8)
        left = 4 + 5 * label
        array[4:24, left : left + 2 + rng.integers(0, 3)] = 255
        images.append(Image.fromarray(array, mode="L"))
        labels.append(label)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(i) for i in range(num_classes)])}
    )
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)


def make_tiny_unet(cross_attention_dim: int | None = 32, num_class_embeds: int | None = 11, sample_size: int = 8):
    """A two-level MnistUNet2DConditionModel small enough for tests that run in seconds."""
    torch.manual_seed(0)
    return MnistUNet2DConditionModel(
        sample_size=sample_size,
        block_out_channels=(16, 32),
        attention_levels=(False, True),
        attention_head_dim=16,
        cross_attention_dim=cross_attention_dim,
        num_class_embeds=num_class_embeds,
    )


def make_tiny_pipeline(text: bool = True, classes: bool = True) -> MnistDiffusionPipeline:
    """A tiny pipeline with text and/or class conditioning, 8x8 images, progress bar off."""
    torch.manual_seed(0)
    tokenizer = build_caption_tokenizer() if text else None
    text_encoder = build_text_encoder(tokenizer, hidden_size=32, intermediate_size=64) if text else None
    unet = make_tiny_unet(cross_attention_dim=32 if text else None, num_class_embeds=11 if classes else None)
    pipe = MnistDiffusionPipeline(
        unet=unet,
        scheduler=MnistDDPMScheduler(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        id2label=DIGIT_NAMES if classes else None,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def tiny_pipeline() -> MnistDiffusionPipeline:
    return make_tiny_pipeline()


def make_tiny_classifier(num_classes: int = 10) -> MnistClassifier:
    torch.manual_seed(0)
    return MnistClassifier(num_classes=num_classes, sample_size=8, block_out_channels=(4, 8), feature_dim=16).eval()


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate's process-wide state reset before and after the test, so a run in-process may pick its own
    mixed precision or gradient accumulation (an `Accelerator` refuses to change them once set in a process)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist each worker takes one core: torch, and the processes the tests start, run on one thread."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture
def single_thread():
    """Torch on one thread for the test: on a loaded machine two threads per process oversubscribe the cores and tiny
    models train several times slower (the tests' `accelerate launch` runs set `OMP_NUM_THREADS=1` likewise)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
