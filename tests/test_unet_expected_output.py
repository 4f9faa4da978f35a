"""Expected-output tests of MnistUNet2DConditionModel: fixed-seed slices that catch silent changes to the network."""

import pytest
import torch
from conftest import make_tiny_unet
from safetensors.torch import load_file

from mnist_diffusion import MnistUNet2DConditionModel
from mnist_diffusion.pretrained import DIFFUSION_MODEL

RELEASED_UNET = DIFFUSION_MODEL / "unet"
# Computed once with the released weights (v7); a change here means the network or its weights changed.
CENTER = [1.07491, 0.74315, 1.14992, 0.84164, 0.75059, 0.63366, 0.91983, 0.42897, 0.66055]
CORNER = [-3.52303, -1.60420, 1.11255, 3.94572, -3.76038, 2.08956, 1.92302, 2.22548, 2.17651]
TINY_EXPECTED = {
    "tiny": [0.37083, 0.88312, 0.21780, -0.01747, 0.65883, 0.50856, 0.04196, 0.24359, 0.22164],
    "tiny-patched": [-0.08027, -0.08078, -0.33688, -0.21049, -0.06818, -0.00919, -0.18914, -0.26422, -0.29643],
}


def predict(unet: MnistUNet2DConditionModel, size: int, context_dim: int) -> torch.Tensor:
    """The prediction for two fixed-seed inputs: class 7 at t=999 with a full prompt, the null class at t=10 padded."""
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(2, unet.config.in_channels, size, size, generator=generator)
    context = torch.randn(2, 5, context_dim, generator=generator)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        return unet(
            sample, torch.tensor([999, 10]), context, class_labels=torch.tensor([7, 10]), encoder_attention_mask=mask
        ).sample


def test_released_unet_weights_load_into_exactly_the_models_parameters():
    unet = MnistUNet2DConditionModel.from_pretrained(RELEASED_UNET)
    saved = load_file(RELEASED_UNET / "diffusion_pytorch_model.safetensors")
    assert set(saved) == set(unet.state_dict())
    assert all(torch.equal(saved[name], tensor) for name, tensor in unet.state_dict().items())


def test_released_unet_output_slice():
    out = predict(MnistUNet2DConditionModel.from_pretrained(RELEASED_UNET), size=28, context_dim=64)
    assert out.shape == (2, 1, 28, 28)
    center_of_first = out[0, 0, 12:15, 12:15].flatten()
    corner_of_second = out[1, 0, -3:, -3:].flatten()
    assert torch.allclose(center_of_first, torch.tensor(CENTER), atol=1e-4), center_of_first
    assert torch.allclose(corner_of_second, torch.tensor(CORNER), atol=1e-4), corner_of_second


TINY_LAYOUTS = {
    # conftest's two-level UNet: interpolation upsampling, one block per level, attention at the second level.
    "tiny": dict(),
    # three levels, two blocks per level, 2x2 patches, attention at the first and last level, transposed convolutions.
    "tiny-patched": dict(
        block_out_channels=(8, 16, 16),
        attention_levels=(True, False, True),
        attention_head_dim=8,
        layers_per_block=2,
        patch_size=2,
        upsample_type="conv_transpose",
    ),
}


@pytest.mark.parametrize("layout", sorted(TINY_LAYOUTS))
def test_tiny_unet_output_slice(layout):
    if TINY_LAYOUTS[layout]:
        torch.manual_seed(0)
        unet = MnistUNet2DConditionModel(
            sample_size=16, cross_attention_dim=32, num_class_embeds=11, **TINY_LAYOUTS[layout]
        )
    else:
        unet = make_tiny_unet()
    out = predict(unet, size=16 if TINY_LAYOUTS[layout] else 8, context_dim=32)
    corner_of_second = out[1, 0, -3:, -3:].flatten()
    assert torch.allclose(corner_of_second, torch.tensor(TINY_EXPECTED[layout]), atol=1e-4), corner_of_second
