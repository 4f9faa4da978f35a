"""Tests of MnistImg2ImgPipeline, MnistInpaintPipeline and the image inputs they accept."""

import logging

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import make_tiny_pipeline
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
from mnist_diffusion.pipelines.pipeline_mnist_inpaint import repaint_schedule

from mnist_diffusion import (
    MnistDiffusionPipeline,
    MnistImg2ImgPipeline,
    MnistInpaintPipeline,
    MnistUNet2DConditionModel,
)
from mnist_diffusion.image_input import is_dark_on_light, prepare_image, prepare_mask


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def digit(size=8):
    """A white vertical bar on black, `uint8` (size, size)."""
    array = np.zeros((size, size), dtype=np.uint8)
    array[size // 8 : size - size // 8, size * 3 // 8 : size * 5 // 8] = 255
    array[size // 4, size // 4 :] = 180
    return array


def top_half_mask(size=8):
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[: size // 2] = 255
    return mask


@pytest.fixture
def img2img():
    return MnistImg2ImgPipeline.from_pipe(make_tiny_pipeline())


@pytest.fixture
def inpaint():
    return MnistInpaintPipeline.from_pipe(make_tiny_pipeline())


def test_from_pipe_shares_the_components():
    pipe = make_tiny_pipeline()
    img2img = MnistImg2ImgPipeline.from_pipe(pipe)
    inpaint = MnistInpaintPipeline.from_pipe(img2img)
    back = MnistDiffusionPipeline.from_pipe(inpaint)
    for other in (img2img, inpaint, back):
        assert other.unet is pipe.unet and other.text_encoder is pipe.text_encoder
        assert other.tokenizer is pipe.tokenizer and other.scheduler is pipe.scheduler
        assert other.config.id2label == pipe.config.id2label
        assert all(
            a.data_ptr() == b.data_ptr() for a, b in zip(other.unet.parameters(), pipe.unet.parameters(), strict=True)
        )
    swapped = MnistImg2ImgPipeline.from_pipe(pipe, scheduler=DDIMScheduler.from_config(pipe.scheduler.config))
    assert isinstance(swapped.scheduler, DDIMScheduler) and swapped.unet is pipe.unet
    with pytest.raises(ValueError, match=r"unknown arguments \['vae'\]"):
        MnistImg2ImgPipeline.from_pipe(pipe, vae=None)


def test_image_pipelines_load_from_a_saved_text_to_image_pipeline(tmp_path):
    make_tiny_pipeline().save_pretrained(tmp_path)
    pipe = MnistInpaintPipeline.from_pretrained(tmp_path)
    assert isinstance(pipe, MnistInpaintPipeline) and pipe.config.id2label["7"] == "7"


def test_strength_one_equals_text_to_image_from_the_same_noise(img2img):
    kwargs = {"prompt": "a 7", "class_labels": 7, "num_inference_steps": 4, "output_type": "pt"}
    text_to_image = MnistDiffusionPipeline.from_pipe(img2img)(generator=seeded(), **kwargs).images
    assert torch.equal(img2img(image=digit(), strength=1.0, generator=seeded(), **kwargs).images, text_to_image)


def test_a_guidance_embedded_unet_gets_its_guidance_embedding_in_img2img(img2img):
    # a few-step student: the guidance scale goes in as `timestep_cond`, in every pipeline (steps 1-3 are shared)
    torch.manual_seed(0)
    img2img.unet = MnistUNet2DConditionModel.from_config(img2img.unet.config, time_cond_proj_dim=8)
    kwargs = {"class_labels": 7, "num_inference_steps": 2, "guidance_scale": 1.5, "output_type": "pt"}
    text_to_image = MnistDiffusionPipeline.from_pipe(img2img)(generator=seeded(), **kwargs).images
    assert torch.equal(img2img(image=digit(), strength=1.0, generator=seeded(), **kwargs).images, text_to_image)
    stronger = img2img(image=digit(), strength=1.0, generator=seeded(), **{**kwargs, "guidance_scale": 3.0}).images
    assert not torch.equal(stronger, text_to_image)


def test_strength_near_zero_returns_almost_the_input(img2img):
    out = img2img(image=digit(), strength=0.01, num_inference_steps=50, generator=seeded(), output_type="pt")
    expected = torch.from_numpy(digit()).float()[None, None] / 255
    assert (out.images - expected).abs().max() < 0.1
    assert img2img.num_timesteps == 1  # the last step of 50 only
    far = img2img(image=digit(), strength=0.9, num_inference_steps=50, generator=seeded(), output_type="pt")
    assert (far.images - expected).abs().mean() > (out.images - expected).abs().mean()


def test_strength_picks_the_last_part_of_the_schedule(img2img):
    seen = []
    img2img(
        image=digit(),
        class_labels=1,
        strength=0.5,
        num_inference_steps=10,
        output_type="pt",
        callback_on_step_end=lambda pipe, i, t, kwargs: seen.append(int(t)) or kwargs,
    )
    img2img.scheduler.set_timesteps(10)
    assert seen == img2img.scheduler.timesteps[5:].tolist()


@pytest.mark.parametrize(
    "scheduler_cls", [DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler], ids=lambda c: c.__name__
)
def test_img2img_runs_with_every_scheduler(img2img, scheduler_cls):
    img2img.scheduler = scheduler_cls.from_config(img2img.scheduler.config)
    out = img2img("a 7", image=digit(), strength=0.5, num_inference_steps=4, generator=seeded(), output_type="pt")
    assert out.images.shape == (1, 1, 8, 8) and torch.isfinite(out.images).all()


def test_img2img_batches_trajectory_callbacks_and_output_types(img2img):
    out = img2img(
        ["a 1", "a 2"],
        image=digit(),
        num_images_per_prompt=2,
        strength=0.5,
        num_inference_steps=4,
        generator=seeded(),
        output_type="np",
        return_trajectory=True,
    )
    assert out.images.shape == (4, 8, 8, 1)
    assert out.trajectory.latents.shape == (3, 4, 1, 8, 8)  # the noised input, then two steps
    images = img2img(image=[digit(), digit()], class_labels=3, num_inference_steps=2, output_type="pil").images
    assert len(images) == 2 and images[0].mode == "L"
    latents = img2img(image=digit(), class_labels=3, num_inference_steps=2, output_type="latent").images
    assert latents.shape == (1, 1, 8, 8)


def test_inputs_in_every_form_give_the_same_image():
    array = digit(28)
    expected = prepare_image(array, 28, 28)
    assert torch.equal(expected[0, 0], torch.from_numpy(array).float() / 255 * 2 - 1)
    forms = [
        PIL.Image.fromarray(array),
        PIL.Image.fromarray(array).convert("RGB"),
        np.stack([array] * 3, axis=-1),  # RGB numpy, channels last
        torch.from_numpy(array).float() / 255,  # torch (H, W) in [0, 1]
        torch.from_numpy(array).float()[None] / 255 * 2 - 1,  # torch (1, H, W) in [-1, 1]
        torch.from_numpy(array),  # uint8 tensor
    ]
    for form in forms:
        assert torch.allclose(prepare_image(form, 28, 28), expected, atol=1 / 255), type(form)


def test_dark_on_light_is_detected_and_inverted():
    white_on_black = digit(28)
    paper = 255 - white_on_black
    expected = prepare_image(white_on_black, 28, 28)
    assert is_dark_on_light(torch.from_numpy(np.stack([paper, white_on_black]))[:, None] / 255).tolist() == [
        True,
        False,
    ]
    assert torch.allclose(prepare_image(paper, 28, 28), expected, atol=1e-6)
    assert torch.allclose(prepare_image(PIL.Image.fromarray(paper).convert("RGB"), 28, 28), expected, atol=1e-6)
    assert torch.equal(prepare_image(white_on_black, 28, 28, invert=False), expected)
    assert torch.equal(prepare_image(white_on_black, 28, 28, invert=True), -expected)
    # a transparent sheet with dark strokes (a canvas export) is paper behind the strokes
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)
    rgba[..., 3] = white_on_black
    assert torch.allclose(prepare_image(PIL.Image.fromarray(rgba, "RGBA"), 28, 28), expected, atol=1e-6)


def test_any_size_is_resized(img2img):
    big = np.kron(digit(8), np.ones((25, 25), dtype=np.uint8))  # 200x200
    assert torch.allclose(prepare_image(big, 8, 8), prepare_image(digit(8), 8, 8), atol=1e-4)
    sketch = PIL.Image.fromarray(255 - big).convert("RGB")  # a dark-on-white RGB drawing
    out = img2img("a 1", image=sketch, strength=0.3, num_inference_steps=4, generator=seeded(), output_type="pt")
    assert out.images.shape == (1, 1, 8, 8)
    inverted = img2img("a 1", image=big, strength=0.3, num_inference_steps=4, generator=seeded(), output_type="pt")
    assert torch.allclose(out.images, inverted.images, atol=0.02)


@pytest.mark.parametrize("scheduler_cls", [None, DDIMScheduler], ids=["MnistDDPMScheduler", "DDIMScheduler"])
def test_inpainting_keeps_the_known_pixels_exactly(inpaint, scheduler_cls):
    if scheduler_cls is not None:
        inpaint.scheduler = scheduler_cls.from_config(inpaint.scheduler.config)
    image, mask = digit(), top_half_mask()
    images = inpaint(
        "a 7", image=image, mask_image=mask, num_inference_steps=6, jump_length=2, jump_n_sample=3,
        num_images_per_prompt=2, generator=seeded(), output_type="pil",
    ).images  # fmt: skip
    for result in images:
        result = np.asarray(result).astype(int)
        assert np.abs(result[4:] - image[4:]).max() <= 1  # known pixels: max abs difference <= 1/255
        assert not np.array_equal(result[:4], image[:4])  # the masked half was repainted


def test_inpainting_resamples_as_repaint(inpaint):
    assert repaint_schedule(6, jump_length=2, jump_n_sample=2) == [0, 1, 0, 1, 2, 3, 2, 3, 4, 5]
    assert repaint_schedule(4, jump_length=5, jump_n_sample=3) == [0, 1, 2, 3]
    assert repaint_schedule(5, jump_length=2, jump_n_sample=1) == [0, 1, 2, 3, 4]
    calls = []
    inpaint.unet.register_forward_hook(lambda *args: calls.append(1))
    kwargs = {"image": digit(), "mask_image": top_half_mask(), "num_inference_steps": 6, "output_type": "pt"}
    resampled = inpaint(class_labels=2, jump_length=2, jump_n_sample=2, generator=seeded(), **kwargs).images
    assert len(calls) == inpaint.num_timesteps == 10
    plain = inpaint(class_labels=2, jump_n_sample=1, generator=seeded(), **kwargs).images
    assert not torch.equal(resampled, plain)


def test_inpainting_without_resampling_takes_any_scheduler_with_it_only_stateless_ones(inpaint):
    inpaint.scheduler = DPMSolverMultistepScheduler.from_config(inpaint.scheduler.config)
    kwargs = {"image": digit(), "mask_image": top_half_mask(), "num_inference_steps": 4, "output_type": "pt"}
    out = inpaint(class_labels=2, jump_n_sample=1, generator=seeded(), **kwargs).images
    assert torch.allclose(out[..., 4:, :], torch.from_numpy(digit()).float()[4:] / 255, atol=1e-6)
    with pytest.raises(ValueError, match="needs a scheduler without step history.*DPMSolverMultistepScheduler"):
        inpaint(class_labels=2, jump_n_sample=2, **kwargs)


def test_inpainting_without_prompt_or_label_and_with_a_full_mask(inpaint, caplog):
    out = inpaint(image=digit(), mask_image=top_half_mask(), num_inference_steps=4, output_type="pt")
    assert out.images.shape == (1, 1, 8, 8)
    full = np.full((8, 8), 255, dtype=np.uint8)
    with caplog.at_level(logging.WARNING):
        out = inpaint(image=digit(), mask_image=full, class_labels=1, num_inference_steps=4, output_type="pt")
    assert "covers the whole image" in caplog.text and out.images.shape == (1, 1, 8, 8)


def test_mask_is_binarised_at_the_model_resolution():
    mask = prepare_mask(np.kron(top_half_mask(), np.ones((4, 4), dtype=np.uint8)), 8, 8)
    assert torch.equal(mask[0, 0], torch.from_numpy(top_half_mask()).float() / 255)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"strength": 0.0}, r"`strength` is 0.0; expected a number in \(0, 1\]"),
        ({"strength": 1.5}, "`strength` is 1.5"),
        ({"image": None}, "`image` is required"),
        ({"image": "no-such-file.png"}, "image 'no-such-file.png' is not a file"),
        ({"image": np.zeros((8, 8), dtype=np.float32) + 2}, "`image` has float values up to 2"),
        ({"image": np.zeros((2, 3, 8, 8, 1))}, "`image` has shape"),
        ({"image": {"a": 1}}, "`image` has type dict"),
        ({"invert": "yes"}, "`invert` is 'yes'"),
        ({"image": [digit(), digit(), digit()], "class_labels": [1, 2]}, "Got 3 images for 2 prompts"),
        ({"image": np.zeros((8, 8, 5), dtype=np.uint8)}, r"`image` has shape \(8, 8, 5\); expected a channels-last"),
        ({"image": np.zeros((8, 8), dtype=np.complex64)}, "`image` has dtype complex64"),
        ({"image": np.zeros((0, 0))}, r"`image` is empty \(0x0 pixels\)"),
        ({"strength": np.float32(1.5)}, r"`strength` is np.float32\(1.5\)"),
        ({"strength": torch.tensor([0.5, 0.5])}, "`strength` is tensor"),
    ],
)
def test_img2img_bad_input(img2img, kwargs, message):
    calls = []
    img2img.unet.register_forward_hook(lambda *args: calls.append(1))
    with pytest.raises(ValueError, match=message):
        img2img(**{"image": digit(), "class_labels": 1, "num_inference_steps": 2, **kwargs})
    assert calls == []


def test_strength_as_numpy_or_0d_tensor_is_a_number(img2img):
    def run(strength):
        return img2img(image=digit(), class_labels=1, strength=strength, num_inference_steps=4, generator=seeded())

    expected = run(0.5).images[0]
    for strength in (np.float64(0.5), np.float32(0.5), torch.tensor(0.5), np.array(0.5), torch.tensor(0.5).half()):
        assert np.array_equal(np.asarray(run(strength).images[0]), np.asarray(expected)), type(strength)


@pytest.mark.parametrize("pipeline_class", [MnistDiffusionPipeline, MnistImg2ImgPipeline, MnistInpaintPipeline])
def test_from_pipe_refuses_what_is_not_a_pipeline(pipeline_class):
    with pytest.raises(TypeError, match="`pipeline` is a NoneType; expected a MnistDiffusionPipeline"):
        pipeline_class.from_pipe(None)


def test_undecodable_image_file_is_refused(img2img, tmp_path):
    broken = tmp_path / "drawing.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="image '.*drawing.png' is not a readable image file"):
        img2img(image=str(broken), class_labels=1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mask_image": np.zeros((8, 9), dtype=np.uint8)}, "`mask_image` is 9x8 but `image` is 8x8"),
        ({"mask_image": np.zeros((8, 8), dtype=np.uint8)}, r"`mask_image` \[0\] marks nothing to repaint"),
        ({"mask_image": None}, "`mask_image` is required"),
        ({"jump_length": 0}, "`jump_length` is 0"),
        ({"jump_n_sample": 1.5}, "`jump_n_sample` is 1.5"),
        ({"jump_n_sample": 1_000_000, "jump_length": 1}, "`jump_n_sample` is 1000000; expected at most 20"),
        ({"mask_image": [top_half_mask()] * 2}, "Got 2 masks for 1 images"),
    ],
)
def test_inpaint_bad_input(inpaint, kwargs, message):
    calls = []
    inpaint.unet.register_forward_hook(lambda *args: calls.append(1))
    with pytest.raises(ValueError, match=message):
        inpaint(**{"image": digit(), "mask_image": top_half_mask(), "class_labels": 1, **kwargs})
    assert calls == []


def test_inpainting_from_part_of_the_schedule_keeps_the_known_pixels(inpaint):
    out = inpaint(
        image=digit(), mask_image=top_half_mask(), class_labels=1, strength=0.5, num_inference_steps=8,
        jump_length=2, jump_n_sample=2, generator=seeded(), output_type="np",
    )  # fmt: skip
    assert inpaint.num_timesteps == len(repaint_schedule(4, 2, 2))  # the last half of 8 steps, resampled
    assert np.abs(np.round(out.images[0, 4:, :, 0] * 255) - digit()[4:]).max() <= 1
