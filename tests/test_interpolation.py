"""Tests of mnist_diffusion.interpolation: slerp of noise, lerp of text and class embeddings between two ends."""

import pytest
import torch
from conftest import make_tiny_pipeline
from diffusers import DDIMScheduler

from mnist_diffusion import MnistDiffusionPipeline, MnistInpaintPipeline
from mnist_diffusion.interpolation import interpolate, slerp


def test_slerp_ends_and_norm():
    a, b = torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.randn(1, 8, 8)
    frames = slerp(a, b, torch.linspace(0, 1, 5))
    assert torch.allclose(frames[0], a, atol=1e-5) and torch.allclose(frames[-1], b, atol=1e-5)
    # the middle keeps about the norm of the ends, where lerp shrinks it
    assert frames[2].norm() > ((a + b) / 2).norm() * 1.2
    assert torch.allclose(slerp(a, a, torch.tensor([0.0, 0.5])), torch.stack([a, a]), atol=1e-5)


@pytest.fixture
def tiny_pipeline():
    """Interpolation compares frames with single samples: a deterministic scheduler adds no per-batch step noise."""
    pipe = make_tiny_pipeline()
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    return pipe


def call(pipe, **kwargs):
    return interpolate(pipe, num_frames=4, num_inference_steps=3, output_type="pt", **kwargs).images


def test_prompt_interpolation_ends_are_the_prompts_samples(tiny_pipeline):
    frames = call(tiny_pipeline, prompts=("a 3", "an 8"), seeds=(5, 5), class_label=3)
    assert frames.shape == (4, 1, 8, 8)
    noise = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    for index, prompt in ((0, "a 3"), (3, "an 8")):
        alone = tiny_pipeline(prompt, class_labels=3, latents=noise, num_inference_steps=3, output_type="pt").images
        assert torch.allclose(frames[index], alone[0], atol=1e-5)
    assert not torch.allclose(frames[1], frames[0], atol=1e-4) and not torch.allclose(frames[1], frames[3], atol=1e-4)


def test_class_interpolation_ends_are_the_classes_samples(tiny_pipeline):
    frames = call(tiny_pipeline, class_labels=(1, "7"), prompt="a digit")
    noise = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for index, label in ((0, 1), (3, 7)):
        alone = tiny_pipeline("a digit", class_labels=label, latents=noise, num_inference_steps=3, output_type="pt")
        assert torch.allclose(frames[index], alone.images[0], atol=1e-5)
    assert not torch.allclose(frames[1], frames[0], atol=1e-4)
    # the class embedding is back to normal afterwards
    assert not tiny_pipeline.unet.class_embedding._forward_hooks


def test_seed_interpolation_with_a_fixed_class_from_any_pipeline_class():
    inpaint = MnistInpaintPipeline.from_pipe(make_tiny_pipeline(text=False))
    inpaint.scheduler = DDIMScheduler.from_config(inpaint.scheduler.config)
    frames = call(inpaint, seeds=(0, 1), class_label=4)
    first = MnistDiffusionPipeline.from_pipe(inpaint)(
        class_labels=4, generator=torch.Generator().manual_seed(0), num_inference_steps=3, output_type="pt"
    ).images
    assert torch.allclose(frames[0], first[0], atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "Nothing to interpolate"),
        ({"prompts": ("a 3",)}, "`prompts` is .*; expected a pair"),
        ({"prompts": ("a", "b"), "prompt": "c"}, "not both"),
        ({"class_labels": (1, 12)}, "Class label 12 is out of range"),
        ({"prompts": ("a", "b"), "num_frames": 1}, "`num_frames` is 1"),
        ({"prompts": ("a", "b"), "latents": torch.zeros(1)}, "`latents` is set by `interpolate`"),
    ],
)
def test_bad_input(tiny_pipeline, kwargs, message):
    with pytest.raises(ValueError, match=message):
        interpolate(tiny_pipeline, **kwargs)
