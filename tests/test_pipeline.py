"""Tests of MnistDiffusionPipeline: outputs, determinism, guidance, swaps, stock UNet, round trips, bad input."""

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import DIGIT_NAMES, make_tiny_pipeline
from diffusers import (
    DDIMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    UNet2DConditionModel,
    UNet2DModel,
)

from mnist_diffusion import (
    MnistDDPMScheduler,
    MnistDiffusionPipeline,
    MnistDiffusionPipelineOutput,
    MnistImg2ImgPipeline,
)


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def run(pipe, **kwargs):
    kwargs = {"num_inference_steps": 3, "generator": seeded(), "output_type": "pt", **kwargs}
    return pipe(**kwargs).images


@pytest.mark.parametrize("output_type", ["pil", "np", "pt"])
def test_every_output_type_has_the_right_shape_and_range(tiny_pipeline, output_type):
    out = tiny_pipeline("a thick 7", num_images_per_prompt=2, num_inference_steps=3, output_type=output_type)
    assert isinstance(out, MnistDiffusionPipelineOutput)
    images = out.images
    if output_type == "pil":
        assert len(images) == 2 and all(isinstance(i, PIL.Image.Image) for i in images)
        assert images[0].mode == "L" and images[0].size == (8, 8)
        return
    if output_type == "np":
        assert isinstance(images, np.ndarray) and images.shape == (2, 8, 8, 1)
    else:
        assert isinstance(images, torch.Tensor) and images.shape == (2, 1, 8, 8)
    assert images.min() >= 0 and images.max() <= 1


def test_same_generator_gives_the_same_images(tiny_pipeline):
    assert torch.equal(run(tiny_pipeline, prompt="seven"), run(tiny_pipeline, prompt="seven"))
    assert not torch.equal(run(tiny_pipeline, prompt="seven"), run(tiny_pipeline, prompt="seven", generator=seeded(1)))


def test_batch_equals_singles(tiny_pipeline):
    batch = run(tiny_pipeline, prompt=["one", "two"], class_labels=[1, 2], generator=[seeded(1), seeded(2)])
    first = run(tiny_pipeline, prompt="one", class_labels=1, generator=[seeded(1)])
    second = run(tiny_pipeline, prompt="two", class_labels=2, generator=[seeded(2)])
    assert torch.allclose(batch, torch.cat([first, second]), atol=1e-5)


def test_guidance_changes_the_output_and_runs_one_batched_forward(tiny_pipeline):
    calls = []
    tiny_pipeline.unet.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    unguided = run(tiny_pipeline, prompt="seven", class_labels=7, guidance_scale=1.0)
    assert calls == [1, 1, 1]
    calls.clear()
    guided = run(tiny_pipeline, prompt="seven", class_labels=7, guidance_scale=4.0)
    assert calls == [2, 2, 2]
    assert not torch.allclose(guided, unguided)
    negative = run(tiny_pipeline, prompt="seven", class_labels=7, guidance_scale=4.0, negative_prompt="thin")
    assert not torch.allclose(guided, negative)


def test_guidance_interval_guides_only_its_steps(tiny_pipeline):
    calls = []
    tiny_pipeline.unet.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    kwargs = {"prompt": ["seven", "one"], "class_labels": [7, 1], "guidance_scale": 4.0, "num_inference_steps": 4}
    full = run(tiny_pipeline, **kwargs)
    assert torch.equal(run(tiny_pipeline, **kwargs, guidance_start=0.0, guidance_stop=1.0), full)
    calls.clear()
    early = run(tiny_pipeline, **kwargs, guidance_stop=0.5)
    assert calls == [4, 4, 2, 2]  # guided steps batch both branches, the rest only the conditional one
    calls.clear()
    late = run(tiny_pipeline, **kwargs, guidance_start=0.5)
    assert calls == [2, 2, 4, 4]
    unguided = run(tiny_pipeline, **{**kwargs, "guidance_scale": 1.0})
    assert torch.equal(run(tiny_pipeline, **kwargs, guidance_start=0.3, guidance_stop=0.3), unguided)
    for a, b in [(early, full), (early, unguided), (late, full), (late, unguided), (early, late)]:
        assert not torch.allclose(a, b)


def test_prompt_and_class_conditioning_each_matter(tiny_pipeline):
    base = run(tiny_pipeline, prompt="seven", class_labels=7, guidance_scale=1.0)
    assert not torch.allclose(base, run(tiny_pipeline, prompt="one", class_labels=7, guidance_scale=1.0))
    assert not torch.allclose(base, run(tiny_pipeline, prompt="seven", class_labels=1, guidance_scale=1.0))


def test_class_labels_by_name_equal_ids(tiny_pipeline):
    assert torch.equal(run(tiny_pipeline, class_labels=["7", "3"]), run(tiny_pipeline, class_labels=[7, 3]))
    pipe = make_tiny_pipeline(text=False)
    pipe.register_to_config(id2label={**DIGIT_NAMES, "7": "Sneaker"})
    assert pipe.resolve_class_labels(["sneaker", "Sneaker", 2]) == [7, 7, 2]


def test_label_names_are_the_id2label_names_in_id_order():
    names = [f"class {i}" for i in range(10)]
    pipe = MnistImg2ImgPipeline.from_pipe(make_tiny_pipeline(), id2label={i: names[i] for i in reversed(range(10))})
    assert pipe.label_names == names
    assert make_tiny_pipeline(classes=False).label_names is None


def test_class_only_and_text_only_pipelines():
    class_only = make_tiny_pipeline(text=False)
    assert run(class_only, class_labels=[0, 9]).shape == (2, 1, 8, 8)
    text_only = make_tiny_pipeline(classes=False)
    assert run(text_only, prompt=["a", "b", "c"]).shape == (3, 1, 8, 8)


def test_trajectory_records_every_step(tiny_pipeline):
    out = tiny_pipeline(class_labels=[4, 5], num_inference_steps=4, generator=seeded(), return_trajectory=True)
    trajectory = out.trajectory
    assert trajectory.latents.shape == (5, 2, 1, 8, 8)
    assert trajectory.pred_original_samples.shape == (4, 2, 1, 8, 8)
    assert trajectory.timesteps.tolist() == tiny_pipeline.scheduler.timesteps.tolist()
    final = run(tiny_pipeline, class_labels=[4, 5], num_inference_steps=4)
    assert torch.allclose((trajectory.latents[-1] / 2 + 0.5).clamp(0, 1), final, atol=1e-6)
    images, traj = tiny_pipeline(class_labels=4, num_inference_steps=2, return_dict=False, return_trajectory=True)
    assert len(images) == 1 and traj.latents.shape[0] == 3


def test_callback_on_step_end_sees_and_can_replace_latents(tiny_pipeline):
    seen = []

    def callback(pipe, step, timestep, kwargs):
        seen.append((step, int(timestep), sorted(kwargs)))
        return {"latents": torch.zeros_like(kwargs["latents"])}

    images = run(
        tiny_pipeline, class_labels=1, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["latents"]
    )
    assert [s[0] for s in seen] == [0, 1, 2] and seen[0][2] == ["latents"]
    assert torch.allclose(images, torch.full_like(images, 0.5))


@pytest.mark.parametrize("scheduler_cls", [DDIMScheduler, DPMSolverMultistepScheduler, MnistDDPMScheduler])
def test_scheduler_swaps(tiny_pipeline, scheduler_cls):
    tiny_pipeline.scheduler = scheduler_cls.from_config(tiny_pipeline.scheduler.config)
    out = tiny_pipeline(class_labels=3, num_inference_steps=4, output_type="pt", return_trajectory=True)
    assert out.images.shape == (1, 1, 8, 8) and torch.isfinite(out.trajectory.pred_original_samples).all()


def test_stock_unet2dconditionmodel_can_replace_the_unet(tiny_pipeline):
    torch.manual_seed(0)
    stock = UNet2DConditionModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
        num_class_embeds=11,
    )
    pipe = MnistDiffusionPipeline(
        unet=stock,
        scheduler=tiny_pipeline.scheduler,
        text_encoder=tiny_pipeline.text_encoder,
        tokenizer=tiny_pipeline.tokenizer,
        id2label=DIGIT_NAMES,
    )
    pipe.set_progress_bar_config(disable=True)
    guided = run(pipe, prompt="a thick 7", class_labels="7", guidance_scale=3.0)
    assert guided.shape == (1, 1, 8, 8)
    assert not torch.allclose(guided, run(pipe, prompt="a thick 7", class_labels="7", guidance_scale=1.0))


def test_class_conditional_unet2dmodel_runs_without_text_arguments(tiny_pipeline, tmp_path):
    torch.manual_seed(0)
    stock = UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        num_class_embeds=11,
    )
    pipe = MnistDiffusionPipeline(unet=stock, scheduler=tiny_pipeline.scheduler, id2label=DIGIT_NAMES)
    pipe.set_progress_bar_config(disable=True)
    with pytest.raises(ValueError, match="no text encoder"):
        pipe(prompt="a 7")
    seven, one = run(pipe, class_labels="7"), run(pipe, class_labels="1")
    assert seven.shape == (1, 1, 8, 8) and not torch.allclose(seven, one)
    assert not torch.allclose(run(pipe, class_labels="7", guidance_scale=1.0), seven)  # the default 3.0 guides
    pipe.save_pretrained(tmp_path)
    reloaded = MnistDiffusionPipeline.from_pretrained(tmp_path)
    reloaded.set_progress_bar_config(disable=True)
    assert type(reloaded.unet) is UNet2DModel and torch.allclose(run(reloaded, class_labels="7"), seven, atol=1e-4)


def test_save_pretrained_writes_safetensors_and_both_loaders_restore(tiny_pipeline, tmp_path):
    tiny_pipeline.save_pretrained(tmp_path)
    assert (tmp_path / "model_index.json").exists()
    for component in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        assert (tmp_path / component).exists()
    assert not list(tmp_path.rglob("*.bin"))
    expected = run(tiny_pipeline, prompt="seven", class_labels="7")
    for loader in (MnistDiffusionPipeline, DiffusionPipeline):
        loaded = loader.from_pretrained(tmp_path)
        assert isinstance(loaded, MnistDiffusionPipeline) and isinstance(loaded.scheduler, MnistDDPMScheduler)
        assert loaded.config.id2label == DIGIT_NAMES
        loaded.set_progress_bar_config(disable=True)
        assert torch.equal(run(loaded, prompt="seven", class_labels="7"), expected)


def test_class_only_pipeline_round_trip(tmp_path):
    pipe = make_tiny_pipeline(text=False)
    pipe.save_pretrained(tmp_path)
    loaded = MnistDiffusionPipeline.from_pretrained(tmp_path)
    assert loaded.text_encoder is None and loaded.tokenizer is None
    loaded.set_progress_bar_config(disable=True)
    assert torch.equal(run(loaded, class_labels=2), run(pipe, class_labels=2))


def test_fp16_variant_round_trip(tiny_pipeline, tmp_path):
    expected = run(tiny_pipeline, prompt="seven", class_labels=7)
    tiny_pipeline.to(torch.float16).save_pretrained(tmp_path, variant="fp16")
    assert (tmp_path / "unet" / "diffusion_pytorch_model.fp16.safetensors").exists()
    loaded = MnistDiffusionPipeline.from_pretrained(tmp_path, variant="fp16", dtype=torch.float32)
    assert loaded.unet.dtype == torch.float32
    loaded.set_progress_bar_config(disable=True)
    assert torch.allclose(run(loaded, prompt="seven", class_labels=7), expected, atol=2e-2)


BAD_INPUTS = [
    ({}, "got neither"),
    ({"class_labels": 10}, "out of range"),
    ({"class_labels": -1}, "out of range"),
    ({"class_labels": "seven"}, "Unknown class label 'seven'"),
    ({"class_labels": 1.5}, "expected an int or a name"),
    ({"prompt": ["a", "b"], "class_labels": [1, 2, 3]}, "2 prompts and 3 class labels"),
    ({"prompt": ["a", "b"], "negative_prompt": ["x", "y", "z"]}, "3 negative prompts for a batch of 2"),
    ({"class_labels": 1, "guidance_scale": -1.0}, "guidance_scale` is -1.0"),
    (
        {"class_labels": 1, "guidance_start": 0.6, "guidance_stop": 0.5},
        "guidance_start` is 0.6 and `guidance_stop` is 0.5",
    ),
    ({"class_labels": 1, "guidance_stop": 1.5}, "guidance_stop` is 1.5"),
    ({"class_labels": 1, "num_inference_steps": 0}, "num_inference_steps` is 0"),
    ({"class_labels": 1, "num_inference_steps": 1001}, "num_inference_steps` is 1001"),
    ({"class_labels": 1, "height": 9}, "`height` is 9"),
    ({"class_labels": 1, "width": 0}, "`width` is 0"),
    ({"class_labels": 1, "output_type": "jpeg"}, "`output_type` is 'jpeg'"),
    ({"class_labels": [1, 2], "generator": [torch.Generator()]}, "list of 1 generators for 2 images"),
    ({"class_labels": 1, "latents": torch.zeros(2, 1, 8, 8)}, r"latents` have shape \(2, 1, 8, 8\)"),
    ({"class_labels": 1, "num_images_per_prompt": 0}, "num_images_per_prompt` is 0"),
    ({"class_labels": 1, "callback_on_step_end_tensor_inputs": ["foo"]}, r"\['foo'\] are not available"),
    # wrong types and non-finite numbers get a ValueError naming the argument, not a TypeError from deep inside
    ({"prompt": 123}, "`prompt` must be a string or a non-empty list of strings, got 123"),
    ({"class_labels": 1, "guidance_scale": "3"}, "`guidance_scale` is '3'; expected a finite number"),
    ({"class_labels": 1, "guidance_scale": float("nan")}, "`guidance_scale` is nan; expected a finite number"),
    ({"class_labels": 1, "guidance_scale": float("inf")}, "`guidance_scale` is inf; expected a finite number"),
    ({"class_labels": 1, "guidance_start": float("nan")}, "`guidance_start` is nan"),
    ({"class_labels": 1, "generator": 0}, "`generator` is 0; expected a `torch.Generator`"),
    ({"class_labels": 1, "latents": np.zeros((1, 1, 8, 8))}, "`latents` is a ndarray; expected a torch.Tensor"),
]


@pytest.mark.parametrize("kwargs, message", BAD_INPUTS)
def test_bad_input_raises_before_any_compute(tiny_pipeline, kwargs, message):
    calls = []
    tiny_pipeline.unet.register_forward_hook(lambda *args: calls.append(1))
    tiny_pipeline.text_encoder.register_forward_hook(lambda *args: calls.append(1))
    with pytest.raises(ValueError, match=message):
        tiny_pipeline(**kwargs)
    assert calls == []


def test_prompt_without_text_encoder_and_labels_without_classes_are_refused():
    with pytest.raises(ValueError, match="no text encoder"):
        make_tiny_pipeline(text=False)("a seven")
    with pytest.raises(ValueError, match="no class conditioning"):
        make_tiny_pipeline(classes=False)(class_labels=1)


def test_mismatched_components_are_refused(tiny_pipeline):
    with pytest.raises(ValueError, match="id2label"):
        MnistDiffusionPipeline(tiny_pipeline.unet, tiny_pipeline.scheduler, id2label={"0": "zero"})
    with pytest.raises(ValueError, match="both `text_encoder` and `tokenizer`"):
        MnistDiffusionPipeline(tiny_pipeline.unet, tiny_pipeline.scheduler, text_encoder=tiny_pipeline.text_encoder)


def test_non_finite_latents_are_refused(tiny_pipeline):
    latents = torch.randn(1, 1, 8, 8)
    latents[0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="`latents` hold NaN or infinite values"):
        tiny_pipeline(class_labels=3, num_inference_steps=2, latents=latents)


def test_a_text_only_pipeline_says_it_cannot_generate(tiny_pipeline):
    text_only = MnistDiffusionPipeline(
        unet=None, scheduler=tiny_pipeline.scheduler, text_encoder=tiny_pipeline.text_encoder,
        tokenizer=tiny_pipeline.tokenizer,
    )  # fmt: skip
    with pytest.raises(ValueError, match="loaded with `unet=None`"):
        text_only("a 7", num_inference_steps=2)
