"""Tests of MnistUNet2DConditionModel: shapes, conditioning, timestep forms, masks, errors, save/load."""

import json

import pytest
import torch
from conftest import make_tiny_unet
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

from mnist_diffusion import MnistUNet2DConditionModel


def inputs(batch=2, size=8, tokens=5, dim=32):
    torch.manual_seed(0)
    return torch.randn(batch, 1, size, size), torch.randn(batch, tokens, dim)


def test_default_model_takes_28x28_digits_with_text_and_class():
    torch.manual_seed(0)
    unet = MnistUNet2DConditionModel(cross_attention_dim=64, num_class_embeds=11)
    out = unet(torch.randn(3, 1, 28, 28), 10, torch.randn(3, 7, 64), class_labels=torch.tensor([0, 9, 10]))
    assert isinstance(out, UNet2DConditionOutput)
    assert out.sample.shape == (3, 1, 28, 28)
    assert torch.isfinite(out.sample).all()


@pytest.mark.parametrize("timestep", [7, 7.0, torch.tensor(7), torch.tensor([7]), torch.tensor([7, 7])])
def test_timestep_forms_agree(timestep):
    unet = make_tiny_unet()
    sample, context = inputs()
    expected = unet(sample, torch.tensor([7, 7]), context).sample
    assert torch.allclose(unet(sample, timestep, context).sample, expected, atol=1e-6)


def test_per_sample_timesteps_change_the_output():
    unet = make_tiny_unet()
    sample, context = inputs()
    assert not torch.allclose(unet(sample, torch.tensor([1, 900]), context).sample, unet(sample, 1, context).sample)


def test_class_and_text_conditioning_each_change_the_output():
    unet = make_tiny_unet()
    sample, context = inputs()
    base = unet(sample, 3, context, class_labels=torch.tensor([1, 1])).sample
    assert not torch.allclose(base, unet(sample, 3, context, class_labels=torch.tensor([2, 2])).sample)
    assert not torch.allclose(base, unet(sample, 3, context * 2, class_labels=torch.tensor([1, 1])).sample)


def test_omitted_class_labels_mean_the_null_class():
    unet = make_tiny_unet()
    sample, context = inputs()
    null = unet(sample, 3, context, class_labels=torch.tensor([10, 10])).sample
    assert torch.allclose(unet(sample, 3, context).sample, null)


def test_padding_tokens_are_ignored_through_the_mask():
    unet = make_tiny_unet()
    sample, context = inputs()
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
    changed = context.clone()
    changed[mask == 0] = 100.0
    a = unet(sample, 3, context, encoder_attention_mask=mask).sample
    b = unet(sample, 3, changed, encoder_attention_mask=mask).sample
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, unet(sample, 3, changed).sample)


def test_class_only_and_text_only_models():
    class_only = make_tiny_unet(cross_attention_dim=None)
    text_only = make_tiny_unet(num_class_embeds=None)
    sample, context = inputs()
    assert class_only(sample, 3, class_labels=torch.tensor([0, 1])).sample.shape == sample.shape
    assert text_only(sample, 3, context).sample.shape == sample.shape
    with pytest.raises(ValueError, match="no class embedding"):
        text_only(sample, 3, context, class_labels=torch.tensor([0, 1]))


def test_rgb_and_other_sizes():
    torch.manual_seed(0)
    unet = MnistUNet2DConditionModel(
        in_channels=3, out_channels=3, block_out_channels=(16, 32), attention_levels=(False, True), num_class_embeds=3
    )
    assert unet(torch.randn(1, 3, 12, 16), 5).sample.shape == (1, 3, 12, 16)


def test_return_dict_false_gives_a_tuple():
    unet = make_tiny_unet()
    sample, context = inputs()
    out = unet(sample, 3, context, return_dict=False)
    assert isinstance(out, tuple) and out[0].shape == sample.shape


def test_bad_inputs_raise_value_errors():
    unet = make_tiny_unet()
    sample, context = inputs()
    with pytest.raises(ValueError, match="not divisible by 2"):
        unet(torch.randn(1, 1, 9, 9), 3)
    with pytest.raises(ValueError, match="3 timesteps for a batch of 2"):
        unet(sample, torch.tensor([1, 2, 3]), context)
    with pytest.raises(ValueError, match="not supported"):
        unet(sample, 3, context, cross_attention_kwargs={"scale": 0.5, "gligen": None})
    with pytest.raises(ValueError, match="attention_levels"):
        MnistUNet2DConditionModel(block_out_channels=(8, 16), attention_levels=(True,))
    with pytest.raises(ValueError, match="num_class_embeds"):
        MnistUNet2DConditionModel(num_class_embeds=1)
    with pytest.raises(ValueError, match="`patch_size` must be a positive integer, got 0"):
        MnistUNet2DConditionModel(patch_size=0)
    with pytest.raises(ValueError, match="`upsample_type` is 'bilinear'; expected 'interpolate' or 'conv_transpose'"):
        MnistUNet2DConditionModel(upsample_type="bilinear")


@pytest.mark.parametrize("option, value_before", [("patch_size", 1), ("upsample_type", "interpolate")])
def test_configs_saved_before_an_option_existed_load_unchanged(tmp_path, option, value_before):
    unet = make_tiny_unet()
    unet.save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    config = json.loads(config_file.read_text())
    del config[option]  # as written before the option existed
    config_file.write_text(json.dumps(config))
    loaded = MnistUNet2DConditionModel.from_pretrained(tmp_path)
    assert loaded.config[option] == value_before
    sample, context = inputs()
    assert torch.equal(loaded(sample, 3, context).sample, unet(sample, 3, context).sample)


@pytest.mark.parametrize("patch_size", [1, 2])
def test_patch_size_folds_pixels_into_channels_and_back(patch_size):
    torch.manual_seed(0)
    unet = MnistUNet2DConditionModel(
        block_out_channels=(8, 16), attention_levels=(False, True), attention_head_dim=8, patch_size=patch_size
    )
    assert unet.conv_in.in_channels == patch_size**2 and unet.conv_out.out_channels == patch_size**2
    assert unet.downsample_factor == 2 * patch_size
    sample = torch.randn(2, 1, 12, 12)
    out = unet(sample, 3).sample
    assert out.shape == sample.shape
    # Every output pixel of the 2x2 patches is predicted separately: no two pixels of a patch are tied.
    if patch_size == 2:
        patches = torch.nn.functional.pixel_unshuffle(out, 2)
        assert not torch.allclose(patches[:, 0], patches[:, 1])
        with pytest.raises(ValueError, match="not divisible by 4, which this 2-level network with patch_size 2"):
            unet(torch.randn(1, 1, 14, 14), 3)


def test_conv_transpose_upsampling_goes_straight_to_the_narrower_width(tmp_path):
    torch.manual_seed(0)
    widths = {"block_out_channels": (8, 16), "attention_levels": (False, True), "attention_head_dim": 8}
    unet = MnistUNet2DConditionModel(upsample_type="conv_transpose", patch_size=2, **widths)
    interpolating = MnistUNet2DConditionModel(patch_size=2, **widths)
    (upsampler,) = unet.upsamplers
    assert isinstance(upsampler, torch.nn.ConvTranspose2d)
    assert (upsampler.in_channels, upsampler.out_channels) == (16, 8)
    # The first block after it reads 8 upsampled + 8 skip channels instead of 16 + 8.
    assert unet.up_levels[1].resnets[0].conv1.in_channels == 16
    assert interpolating.up_levels[1].resnets[0].conv1.in_channels == 24
    assert unet.num_parameters() < interpolating.num_parameters()
    sample = torch.randn(2, 1, 12, 12)
    out = unet(sample, 3).sample
    assert out.shape == sample.shape
    unet.save_pretrained(tmp_path)
    loaded = MnistUNet2DConditionModel.from_pretrained(tmp_path)
    assert loaded.config.upsample_type == "conv_transpose"
    assert torch.equal(loaded(sample, 3).sample, out)


def test_save_and_load_round_trip_in_safetensors(tmp_path):
    unet = make_tiny_unet()
    unet.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = MnistUNet2DConditionModel.from_pretrained(tmp_path)

    def public(config):
        return {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in config.items() if not k.startswith("_")}

    assert public(loaded.config) == public(unet.config)
    sample, context = inputs()
    assert torch.equal(loaded(sample, 3, context).sample, unet(sample, 3, context).sample)


def test_time_cond_proj_dim_adds_a_guidance_projection_and_old_configs_load_unchanged(tmp_path):
    unet = make_tiny_unet()
    sample, context = inputs()
    with pytest.raises(ValueError, match="`timestep_cond` was given but this model has no `time_cond_proj_dim`"):
        unet(sample, 3, context, timestep_cond=torch.zeros(2, 8))
    unet.save_pretrained(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    del config["time_cond_proj_dim"]  # as written before the option existed (the released model's config)
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    loaded = MnistUNet2DConditionModel.from_pretrained(tmp_path / "old")
    assert loaded.config.time_cond_proj_dim is None and loaded.time_embedding.cond_proj is None
    assert torch.equal(loaded(sample, 3, context).sample, unet(sample, 3, context).sample)

    student = MnistUNet2DConditionModel.from_config(unet.config, time_cond_proj_dim=8)
    missing, unexpected = student.load_state_dict(unet.state_dict(), strict=False)
    assert missing == ["time_embedding.cond_proj.weight"] and unexpected == []
    condition = torch.randn(2, 8)
    changed = student(sample, 3, context, timestep_cond=condition).sample
    assert not torch.allclose(changed, unet(sample, 3, context).sample)
    torch.nn.init.zeros_(student.time_embedding.cond_proj.weight)  # a zero projection: the teacher's prediction
    torch.testing.assert_close(
        student(sample, 3, context, timestep_cond=condition).sample, unet(sample, 3, context).sample
    )
    student.save_pretrained(tmp_path / "student")
    assert MnistUNet2DConditionModel.from_pretrained(tmp_path / "student").config.time_cond_proj_dim == 8
