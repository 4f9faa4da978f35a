"""diffusers' pipeline conventions (as `PipelineTesterMixin` checks them) on MnistDiffusionPipeline."""

import pytest
import torch
from conftest import make_tiny_pipeline, make_tiny_unet
from diffusers.callbacks import SDCFGCutoffCallback

from mnist_diffusion import MnistDDPMScheduler, MnistDiffusionPipeline, MnistUNet2DConditionModel


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def run(pipe, **kwargs):
    kwargs = {"num_inference_steps": 4, "generator": seeded(), "output_type": "pt", **kwargs}
    return pipe(**kwargs).images


def count_unet_batches(pipe):
    calls = []
    pipe.unet.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    return calls


def test_callback_reads_the_call_state(tiny_pipeline):
    seen = []

    def callback(pipe, step, timestep, kwargs):
        seen.append((pipe.guidance_scale, pipe.do_classifier_free_guidance, pipe.num_timesteps, pipe.interrupt))
        return kwargs

    run(tiny_pipeline, prompt="a 7", guidance_scale=2.5, callback_on_step_end=callback)
    assert seen == [(2.5, True, 4, False)] * 4
    seen.clear()
    run(tiny_pipeline, prompt="a 7", guidance_scale=1.0, num_inference_steps=3, callback_on_step_end=callback)
    assert seen == [(1.0, False, 3, False)] * 3


def test_callback_changes_guidance_mid_run(tiny_pipeline):
    calls = count_unet_batches(tiny_pipeline)

    def stop_guidance_after_step_1(pipe, step, timestep, kwargs):
        if step == 1:
            pipe._guidance_scale = 0.0
        return kwargs

    cut = run(
        tiny_pipeline,
        prompt="a 7",
        class_labels=7,
        guidance_scale=4.0,
        callback_on_step_end=stop_guidance_after_step_1,
    )
    assert calls == [2, 2, 1, 1]  # guided steps batch both branches, then only the conditional one
    # the same as the guidance interval that stops after half the steps
    assert torch.equal(cut, run(tiny_pipeline, prompt="a 7", class_labels=7, guidance_scale=4.0, guidance_stop=0.5))


def test_diffusers_sd_cfg_cutoff_callback_works(tiny_pipeline):
    calls = count_unet_batches(tiny_pipeline)
    callback = SDCFGCutoffCallback(cutoff_step_ratio=0.5)
    out = run(tiny_pipeline, prompt="a 7", guidance_scale=4.0, callback_on_step_end=callback)
    assert calls == [2, 2, 2, 1]  # the callback cuts guidance at step int(4 * 0.5) = 2, after that step ran
    assert tiny_pipeline.guidance_scale == 0.0
    assert not torch.equal(out, run(tiny_pipeline, prompt="a 7", guidance_scale=4.0))
    calls.clear()
    # several images per prompt: its one conditional row serves every image
    many = run(tiny_pipeline, prompt="a 7", guidance_scale=4.0, num_images_per_prompt=3, callback_on_step_end=callback)
    assert calls == [6, 6, 6, 3] and many.shape == (3, 1, 8, 8)


def test_interrupt_stops_the_loop(tiny_pipeline):
    calls = count_unet_batches(tiny_pipeline)

    def interrupt_after_step_1(pipe, step, timestep, kwargs):
        if step == 1:
            pipe._interrupt = True
        return kwargs

    images = run(tiny_pipeline, class_labels=3, guidance_scale=1.0, callback_on_step_end=interrupt_after_step_1)
    assert calls == [1, 1] and images.shape == (1, 1, 8, 8)
    run(tiny_pipeline, class_labels=3, guidance_scale=1.0)
    assert tiny_pipeline.interrupt is False and calls == [1, 1, 1, 1, 1, 1]  # the next call runs in full


def test_output_type_latent_returns_the_raw_latents(tiny_pipeline):
    latents = run(tiny_pipeline, prompt="a 7", output_type="latent")
    images = run(tiny_pipeline, prompt="a 7", output_type="pt")
    assert latents.shape == (1, 1, 8, 8)
    assert latents.min() < 0  # not post-processed into [0, 1]
    assert torch.equal(images, (latents / 2 + 0.5).clamp(0, 1))


def test_encode_prompt_alone_and_precomputed_embeddings_give_the_same_images(tiny_pipeline):
    embeds, mask, negative_embeds, negative_mask = tiny_pipeline.encode_prompt(
        ["a 7", "a 1"], num_images_per_prompt=1, negative_prompt="thin"
    )
    assert embeds.shape == negative_embeds.shape == (2, tiny_pipeline.tokenizer.model_max_length, 32)
    assert mask.shape == negative_mask.shape == embeds.shape[:2]
    by_text = run(tiny_pipeline, prompt=["a 7", "a 1"], negative_prompt="thin", class_labels=[7, 1])
    by_embeds = run(
        tiny_pipeline,
        prompt_embeds=embeds,
        prompt_attention_mask=mask,
        negative_prompt_embeds=negative_embeds,
        negative_prompt_attention_mask=negative_mask,
        class_labels=[7, 1],
    )
    assert torch.equal(by_text, by_embeds)
    # only the positive embeddings: the negative branch encodes the empty prompt, as with a text prompt
    assert torch.equal(
        run(tiny_pipeline, prompt_embeds=embeds[:1], prompt_attention_mask=mask[:1]), run(tiny_pipeline, prompt="a 7")
    )
    no_guidance = tiny_pipeline.encode_prompt("a 7", do_classifier_free_guidance=False, num_images_per_prompt=2)
    assert no_guidance[0].shape[0] == 2 and no_guidance[2] is None and no_guidance[3] is None


def test_encode_prompt_runs_only_the_text_encoder(tiny_pipeline):
    calls = count_unet_batches(tiny_pipeline)
    embeds = tiny_pipeline.encode_prompt("a 7")
    assert calls == []
    # what `from_pretrained(path, unet=None)` builds: a pipeline that only encodes prompts
    text_only = MnistDiffusionPipeline(
        unet=None, scheduler=tiny_pipeline.scheduler, text_encoder=tiny_pipeline.text_encoder,
        tokenizer=tiny_pipeline.tokenizer,
    )  # fmt: skip
    for mine, theirs in zip(text_only.encode_prompt("a 7"), embeds, strict=True):
        assert torch.equal(mine, theirs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prompt": "a 7", "prompt_embeds": torch.zeros(1, 4, 32)}, "both `prompt` and `prompt_embeds`"),
        ({"prompt_embeds": torch.zeros(1, 4, 32)}, "prompt_attention_mask` is None"),
        (
            {"prompt_embeds": torch.zeros(1, 4, 16), "prompt_attention_mask": torch.ones(1, 4)},
            r"\(batch, tokens, 32\)",
        ),
        (
            {
                "prompt_embeds": torch.zeros(1, 4, 32),
                "prompt_attention_mask": torch.ones(1, 4),
                "negative_prompt_embeds": torch.zeros(1, 5, 32),
                "negative_prompt_attention_mask": torch.ones(1, 5),
            },
            "must have the shape of `prompt_embeds`",
        ),
        ({"prompt": "a 7", "negative_prompt": "x", "negative_prompt_embeds": torch.zeros(1, 4, 32)}, "both `negative"),
    ],
)
def test_bad_embeddings_are_refused(tiny_pipeline, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_pipeline(**kwargs)


def test_prompt_embeds_on_a_class_only_pipeline_are_refused():
    pipe = make_tiny_pipeline(text=False)
    with pytest.raises(ValueError, match="no text encoder"):
        pipe(prompt_embeds=torch.zeros(1, 4, 32), prompt_attention_mask=torch.ones(1, 4))
    with pytest.raises(ValueError, match="'prompt_embeds' needs a text encoder, this pipeline has none"):
        pipe(class_labels=1, callback_on_step_end=SDCFGCutoffCallback(cutoff_step_ratio=0.5))


@pytest.mark.parametrize("text, classes", [(False, True), (True, False), (True, True)], ids=["class", "text", "both"])
def test_callback_tensor_inputs_are_those_the_pipeline_has(text, classes):
    # diffusers' PipelineTesterMixin.test_callback_inputs and test_callback_cfg, on each kind of pipeline
    pipe = make_tiny_pipeline(text=text, classes=classes)
    assert pipe._callback_tensor_inputs == ["latents", "noise_pred"] + ["prompt_embeds"] * text
    inputs = {"prompt": "a 7"} if text else {"class_labels": 7}

    def callback_inputs_subset(pipe, i, t, callback_kwargs):
        assert set(callback_kwargs) <= set(pipe._callback_tensor_inputs)
        return callback_kwargs

    def callback_inputs_all(pipe, i, t, callback_kwargs):
        assert set(callback_kwargs) == set(pipe._callback_tensor_inputs)
        assert all(isinstance(tensor, torch.Tensor) for tensor in callback_kwargs.values())
        return callback_kwargs

    def callback_inputs_change_tensor(pipe, i, t, callback_kwargs):
        if i == pipe.num_timesteps - 1:
            callback_kwargs["latents"] = torch.zeros_like(callback_kwargs["latents"])
        return callback_kwargs

    run(pipe, **inputs, callback_on_step_end=callback_inputs_subset, callback_on_step_end_tensor_inputs=["latents"])
    everything = {"callback_on_step_end_tensor_inputs": pipe._callback_tensor_inputs}
    run(pipe, **inputs, callback_on_step_end=callback_inputs_all, **everything)
    output = run(pipe, **inputs, callback_on_step_end=callback_inputs_change_tensor, **everything)
    assert output.abs().sum() == 0.5 * output.numel()  # zero latents post-process to 0.5 gray

    def callback_increase_guidance(pipe, i, t, callback_kwargs):
        pipe._guidance_scale += 1.0
        return callback_kwargs

    run(pipe, **inputs, guidance_scale=2.0, callback_on_step_end=callback_increase_guidance, **everything)
    assert pipe.guidance_scale == 2.0 + pipe.num_timesteps


def test_downsample_factor_is_the_unets_with_patch_size():
    torch.manual_seed(0)
    unet = MnistUNet2DConditionModel(
        sample_size=8, block_out_channels=(16, 32), attention_levels=(False, True), attention_head_dim=16,
        cross_attention_dim=None, num_class_embeds=11, patch_size=2,
    )  # fmt: skip
    pipe = MnistDiffusionPipeline(unet=unet, scheduler=MnistDDPMScheduler())
    assert pipe.downsample_factor == unet.downsample_factor == 4
    calls = count_unet_batches(pipe)
    with pytest.raises(ValueError, match="`height` is 6; expected a positive multiple of 4"):
        pipe(class_labels=1, height=6, width=8, num_inference_steps=2)
    assert calls == []  # refused by check_inputs, before the UNet ran
    assert make_tiny_pipeline().downsample_factor == make_tiny_unet().downsample_factor == 2
