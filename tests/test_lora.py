"""LoRA adapters: peft on the UNet, diffusers' loader API on the pipelines, checks of foreign or corrupt adapters."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import make_tiny_pipeline, make_tiny_unet
from peft import LoraConfig
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import get_peft_model_state_dict

from mnist_diffusion import MnistDiffusionPipeline, MnistImg2ImgPipeline, MnistUNet2DConditionModel
from mnist_diffusion.cli import main

TARGETS = ["to_q", "to_kv", "to_out", "conv1", "conv2"]


def generate(pipe: MnistDiffusionPipeline, **kwargs) -> np.ndarray:
    return pipe(
        class_labels=[1, 2],
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
        **kwargs,
    ).images


def add_random_lora(unet: MnistUNet2DConditionModel, name: str = "default", seed: int = 1) -> None:
    """A LoRA adapter whose B matrices are random (a fresh one is zero, i.e. no change), so it changes the output."""
    unet.add_adapter(LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS), adapter_name=name)
    generator = torch.Generator().manual_seed(seed)
    for key, parameter in unet.named_parameters():
        if f"lora_B.{name}." in key:
            parameter.data = 0.2 * torch.randn(parameter.shape, generator=generator)


def save_adapter(pipe: MnistDiffusionPipeline, folder, name: str = "default") -> None:
    pipe.save_lora_weights(
        folder,
        unet_lora_layers=get_peft_model_state_dict(pipe.unet, adapter_name=name),
        unet_lora_adapter_metadata=pipe.unet.peft_config[name].to_dict(),
    )


def has_lora_layers(module: torch.nn.Module) -> bool:
    return any(isinstance(m, BaseTunerLayer) for m in module.modules())


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    """Two adapters for the tiny pipeline saved in diffusers' layout, the base's images and the styled ones."""
    folder = tmp_path_factory.mktemp("adapters")
    pipe = make_tiny_pipeline()
    base = generate(pipe)
    styled = {}
    for name, seed in (("dots", 1), ("blur", 2)):
        add_random_lora(pipe.unet, name, seed)
        pipe.unet.set_adapters(name)
        styled[name] = generate(pipe)
        save_adapter(pipe, folder / name, name)
    return folder, base, styled


def test_unet_has_peft_adapter_api():
    unet = make_tiny_unet()
    sample, t = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor(500)
    labels = torch.tensor([1, 2])

    def predict(**kwargs) -> torch.Tensor:
        return unet(sample, t, class_labels=labels, **kwargs).sample

    base = predict()
    add_random_lora(unet)
    styled = predict()
    assert not torch.equal(styled, base)
    assert unet.active_adapters() == ["default"]
    unet.disable_lora()
    assert torch.equal(predict(), base)
    unet.enable_lora()
    assert torch.equal(predict(), styled)
    assert torch.equal(predict(cross_attention_kwargs={"scale": 0.0}), base)
    half = predict(cross_attention_kwargs={"scale": 0.5})
    assert not torch.equal(half, base) and not torch.equal(half, styled)
    assert torch.equal(predict(), styled)  # the scale is for one call only
    unet.fuse_lora()
    torch.testing.assert_close(predict(), styled, atol=1e-5, rtol=1e-5)
    unet.unfuse_lora()
    torch.testing.assert_close(predict(), styled, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="not supported"):
        predict(cross_attention_kwargs={"scale": 1.0, "ip_adapter_masks": None})


def test_save_and_load_lora_adapter_on_the_unet(tmp_path):
    unet = make_tiny_unet()
    add_random_lora(unet)
    sample = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    styled = unet(sample, 10).sample
    unet.save_lora_adapter(tmp_path)
    assert (tmp_path / "pytorch_lora_weights.safetensors").is_file()
    fresh = make_tiny_unet()
    fresh.load_lora_adapter(tmp_path, weight_name="pytorch_lora_weights.safetensors", prefix=None, adapter_name="mine")
    assert fresh.active_adapters() == ["mine"]
    assert torch.equal(fresh(sample, 10).sample, styled)


def test_pipeline_loads_adapters_in_diffusers_layout(adapters):
    folder, base, styled = adapters
    assert (folder / "dots" / "pytorch_lora_weights.safetensors").is_file()
    pipe = make_tiny_pipeline()
    pipe.load_lora_weights(folder / "dots", adapter_name="dots")
    np.testing.assert_array_equal(generate(pipe), styled["dots"])
    np.testing.assert_array_equal(generate(pipe, cross_attention_kwargs={"scale": 0.0}), base)
    pipe.load_lora_weights(str(folder / "blur"), adapter_name="blur")
    assert pipe.get_list_adapters() == {"unet": ["dots", "blur"]}
    pipe.set_adapters("blur")
    np.testing.assert_array_equal(generate(pipe), styled["blur"])
    pipe.set_adapters(["dots", "blur"], adapter_weights=[0.5, 0.5])
    blended = generate(pipe)
    assert not np.array_equal(blended, styled["dots"]) and not np.array_equal(blended, styled["blur"])
    pipe.disable_lora()
    np.testing.assert_array_equal(generate(pipe), base)
    pipe.enable_lora()
    np.testing.assert_array_equal(generate(pipe), blended)  # the blend weights survive adapter guidance
    plainly_guided = generate(pipe, adapter_guidance_stop=0.0)
    pipe.fuse_lora(adapter_names=["dots", "blur"])
    # fused adapters are part of the weights: no base model is left to guide from, so guidance is plain
    np.testing.assert_allclose(generate(pipe), plainly_guided, atol=1e-4)
    np.testing.assert_array_equal(generate(pipe, adapter_guidance_stop=1.0), generate(pipe))
    pipe.unfuse_lora()
    pipe.unload_lora_weights()
    assert not has_lora_layers(pipe.unet)
    np.testing.assert_array_equal(generate(pipe), base)


def test_adapter_guidance_takes_the_unconditional_branch_from_the_base(adapters):
    folder, _, _ = adapters
    pipe = make_tiny_pipeline()
    pipe.load_lora_weights(folder / "dots")
    requires_grad = [weight.requires_grad for weight in pipe.unet.parameters()]
    latents = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))

    def noise_prediction(guidance_scale: float, class_labels: list[int] | None, **kwargs) -> torch.Tensor:
        """The (guided) noise prediction of a one-step call from `latents`, as its callback sees it."""
        seen = {}

        def keep(pipe, step, timestep, tensors):
            seen.update(tensors)
            return tensors

        pipe(  # the empty prompt and no label: the unconditional branch's conditioning
            prompt=None if class_labels else "",
            class_labels=class_labels,
            num_images_per_prompt=1 if class_labels else 2,
            num_inference_steps=1,
            guidance_scale=guidance_scale,
            latents=latents,
            output_type="latent",
            callback_on_step_end=keep,
            callback_on_step_end_tensor_inputs=["noise_pred"],
            **kwargs,
        )
        return seen["noise_pred"]

    conditional = noise_prediction(1.0, [1, 2])
    unconditional = noise_prediction(1.0, None)
    pipe.disable_lora()
    base_unconditional = noise_prediction(1.0, None)
    pipe.enable_lora()
    assert not torch.allclose(unconditional, base_unconditional)
    # the one step runs at the top of the schedule, so any `adapter_guidance_stop` > 0 guides from the base
    for stop, guided_from in ((0.5, base_unconditional), (1.0, base_unconditional), (0.0, unconditional)):
        expected = guided_from + 2.0 * (conditional - guided_from)
        torch.testing.assert_close(noise_prediction(2.0, [1, 2], adapter_guidance_stop=stop), expected)
    assert [weight.requires_grad for weight in pipe.unet.parameters()] == requires_grad
    layers = pipe.unfused_lora_layers()
    assert layers and not pipe.unfused_lora_layers({"scale": 0.0})
    with pytest.raises(RuntimeError, match="stopped"), pipe.lora_layers_disabled(layers):  # an error inside the block
        assert not pipe.unfused_lora_layers()
        raise RuntimeError("stopped")
    assert pipe.unfused_lora_layers() == layers
    assert [weight.requires_grad for weight in pipe.unet.parameters()] == requires_grad

    # 4 steps of 1000 timesteps, a stop of 0.5: the two steps at t >= 500 run the branches apart (two
    # forwards of 2 images; the first without the adapters), the other two batched (one forward of 4)
    forwards = []

    def record(unet, args, kwargs):
        forwards.append((args[0].shape[0], bool(pipe.unfused_lora_layers())))

    hook = pipe.unet.register_forward_pre_hook(record, with_kwargs=True)
    pipe(class_labels=[1, 2], num_inference_steps=4, output_type="latent", adapter_guidance_stop=0.5)
    hook.remove()
    assert pipe.scheduler.timesteps.tolist() == [999, 749, 499, 249]
    assert forwards == [(2, False), (2, True), (2, False), (2, True), (4, True), (4, True)]
    with pytest.raises(ValueError, match="`adapter_guidance_stop` is 1.5; expected a fraction"):
        generate(pipe, adapter_guidance_stop=1.5)


def test_image_pipelines_share_the_adapters_and_the_scale(adapters):
    folder, base, styled = adapters
    pipe = make_tiny_pipeline()
    pipe.load_lora_weights(folder / "dots")
    img2img = MnistImg2ImgPipeline.from_pipe(pipe)
    image = torch.zeros(1, 1, 8, 8)
    styled_image = generate(img2img, image=image)
    np.testing.assert_array_equal(generate(img2img, image=image, cross_attention_kwargs={"scale": 1.0}), styled_image)
    pipe.unload_lora_weights()
    unstyled = generate(img2img, image=image)
    assert not np.array_equal(unstyled, styled_image)


def test_adapter_for_another_base_is_refused_and_nothing_changes(adapters):
    folder, _, _ = adapters
    torch.manual_seed(0)
    other = MnistDiffusionPipeline(
        unet=MnistUNet2DConditionModel(
            sample_size=8,
            block_out_channels=(8, 16),
            attention_levels=(False, True),
            attention_head_dim=8,
            cross_attention_dim=32,
            num_class_embeds=11,
            norm_num_groups=4,
        ),
        scheduler=make_tiny_pipeline().scheduler,
        text_encoder=make_tiny_pipeline().text_encoder,
        tokenizer=make_tiny_pipeline().tokenizer,
    )
    with pytest.raises(ValueError, match=r"^'.*dots' has the weight 'unet\..*' of shape .* another base model\.$"):
        other.load_lora_weights(folder / "dots")
    assert not has_lora_layers(other.unet)
    class_only = make_tiny_pipeline(text=False)
    with pytest.raises(ValueError, match="which this pipeline's model does not have"):
        class_only.load_lora_weights(folder / "dots")
    assert not has_lora_layers(class_only.unet)


def test_unreadable_or_foreign_weights_give_one_line_errors(adapters, tmp_path):
    folder, base, _ = adapters
    pipe = make_tiny_pipeline()
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    data = (folder / "dots" / "pytorch_lora_weights.safetensors").read_bytes()
    (corrupt / "pytorch_lora_weights.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"^Could not read LoRA weights from '.*corrupt' \(.*\); expected a folder"):
        pipe.load_lora_weights(corrupt)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="Could not read LoRA weights from"):
        pipe.load_lora_weights(tmp_path / "empty")
    with pytest.raises(ValueError, match="'unet.conv_in.weight', which is not a LoRA weight"):
        pipe.load_lora_weights({"unet.conv_in.weight": torch.zeros(1)})
    text_lora = {"text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(4, 32)}
    with pytest.raises(ValueError, match="LoRA weights for a text_encoder, which this pipeline does not have"):
        make_tiny_pipeline(text=False).load_lora_weights(text_lora)
    assert not has_lora_layers(pipe.unet)
    np.testing.assert_array_equal(generate(pipe), base)


def test_generate_command_blends_adapters(adapters, tmp_path, capsys):
    folder, _, _ = adapters
    model = tmp_path / "model"
    make_tiny_pipeline().save_pretrained(model)

    def grid(*options: str) -> bytes:
        output = tmp_path / f"grid{len(list(tmp_path.glob('grid*.png')))}.png"
        command = [
            "generate",
            "--class-label",
            "1",
            "--model",
            str(model),
            "-n",
            "2",
            "--steps",
            "2",
            "-o",
            str(output),
        ]
        assert main(command + list(options)) == 0
        return PIL.Image.open(output).tobytes()

    base, dots = grid(), grid("--lora", str(folder / "dots"))
    assert dots != base
    assert grid("--lora", str(folder / "dots"), "--lora-scale", "0") == base
    assert grid("--lora", str(folder / "dots"), "--lora-scale", "1") == dots
    assert grid("--lora", str(folder / "dots"), "--adapter-guidance-stop", "0.6") == dots
    assert grid("--lora", str(folder / "dots"), "--adapter-guidance-stop", "0") not in (base, dots)
    blended = grid("--lora", str(folder / "dots"), "--lora", str(folder / "blur"), "--lora-scale", "0.5")
    assert blended not in (base, dots)
    capsys.readouterr()
    options = ["--lora", str(folder / "dots"), "--lora-scale", "1", "--lora-scale", "1", "--lora-scale", "1"]
    assert main(["generate", "--class-label", "1", "--model", str(model), *options]) == 2
    assert "Got 3 LoRA scales for 1 adapters" in capsys.readouterr().err
    assert main(["generate", "--class-label", "1", "--model", str(model), "--lora-scale", "0.5"]) == 2
    assert "pass --lora DIR_OR_REPO too" in capsys.readouterr().err
    assert main(["generate", "--class-label", "1", "--model", str(model), "--adapter-guidance-stop", "0"]) == 2
    assert "--adapter-guidance-stop applies to LoRA adapters" in capsys.readouterr().err
    options = ["--lora", str(folder / "dots"), "--adapter-guidance-stop", "2"]
    assert main(["generate", "--class-label", "1", "--model", str(model), *options]) == 2
    assert "`adapter_guidance_stop` is 2.0; expected a fraction" in capsys.readouterr().err
