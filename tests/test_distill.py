"""Tests of training/distill.py and of few-step students: tiny teacher -> tiny student, resume, refusals, sampling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_training_script, make_digit_dataset, make_tiny_pipeline, make_tiny_unet
from diffusers import DDIMScheduler, LCMScheduler
from PIL import Image
from safetensors.torch import load_file

from mnist_diffusion import MnistDiffusionPipeline, MnistUNet2DConditionModel
from mnist_diffusion.cli import main as cli_main
from mnist_diffusion.pretrained import (
    DIFFUSION_MODEL,
    FAST_DIFFUSION_MODEL,
    FAST_UNET_SUBFOLDERS,
    fast_unet_subfolder,
)
from mnist_diffusion.training.arguments import run_script

FOUR_DIGITS = {str(i): str(i) for i in range(4)}
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def distill_module():
    return load_training_script("distill")


@pytest.fixture(scope="module")
def parquet_dataset(tmp_path_factory) -> Path:
    """48 images of 4 classes in the Hub parquet layout."""
    folder = tmp_path_factory.mktemp("parquet_dataset")
    make_digit_dataset().to_parquet(str(folder / "train-00000-of-00001.parquet"))
    return folder


def save_teacher(folder: Path, text: bool = True, num_classes: int = 4) -> Path:
    """A tiny (random) teacher with `num_classes` classes, 8x8 images."""
    pipe = make_tiny_pipeline(text=text)
    pipe = MnistDiffusionPipeline(
        unet=make_tiny_unet(cross_attention_dim=32 if text else None, num_class_embeds=num_classes + 1),
        scheduler=pipe.scheduler,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        id2label={str(i): str(i) for i in range(num_classes)},
    )
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    return save_teacher(tmp_path_factory.mktemp("teacher"))


def distill_args(teacher: Path, dataset: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--teacher_model_name_or_path", str(teacher), "--dataset_name", str(dataset), "--output_dir", str(output_dir),
        "--train_batch_size", "16", "--num_ddim_timesteps", "10", "--validation_images_per_class", "2",
        "--validation_inference_steps", "2", "--lr_warmup_steps", "1", *extra,
    ]  # fmt: skip


def test_tiny_teacher_distils_into_a_few_step_student(distill_module, teacher, parquet_dataset, tmp_path):
    output_dir = tmp_path / "student"
    args = distill_args(teacher, parquet_dataset, output_dir, "--max_train_steps", "3", "--validation_steps", "3")
    args += ["--checkpointing_steps", "0", "--validation_prompts", "a thick 3"]
    distill_module.main(distill_module.parse_args(args))

    student = MnistDiffusionPipeline.from_pretrained(output_dir)
    student.set_progress_bar_config(disable=True)
    assert isinstance(student.scheduler, LCMScheduler)
    assert student.scheduler.config.original_inference_steps == 10
    assert student.unet.config.time_cond_proj_dim == 32 and student.guidance_embedded
    assert student.config.id2label == FOUR_DIGITS
    # The student started from the teacher's weights; only the guidance projection is new.
    teacher_weights = load_file(teacher / "unet" / "diffusion_pytorch_model.safetensors")
    student_weights = load_file(output_dir / "unet" / "diffusion_pytorch_model.safetensors")
    assert set(student_weights) - set(teacher_weights) == {"time_embedding.cond_proj.weight"}
    assert not torch.equal(student_weights["conv_out.weight"], teacher_weights["conv_out.weight"])  # it trained

    for steps in (1, 4):
        images = student(
            prompt="a thick 3", class_labels="3", num_inference_steps=steps, guidance_scale=1.5, output_type="np"
        ).images
        assert images.shape == (1, 8, 8, 1) and np.isfinite(images).all()
    assert sorted(p.name for p in (output_dir / "validation").iterdir()) == [
        "step-3_classes.png",
        "step-3_prompt-0.png",
    ]
    assert list((output_dir / "logs").rglob("events.out.tfevents.*"))
    assert json.loads((output_dir / "training_args.json").read_text())["max_train_steps"] == 3


def test_progressive_rounds_halve_the_steps_from_the_teacher_then_from_the_previous_student(
    distill_module, teacher, parquet_dataset, tmp_path
):
    common = ["--method", "progressive", "--max_train_steps", "2", "--checkpointing_steps", "0"]
    common += ["--validation_steps", "0", "--report_to", "none"]
    first, second = tmp_path / "four-steps", tmp_path / "two-steps"
    args = distill_args(teacher, parquet_dataset, first, *common, "--num_student_steps", "4")
    student = distill_module.main(distill_module.parse_args(args))
    # Round 1 distils the guidance: the multi-step teacher plus a guidance embedding, sampled by DDIM's grid.
    assert student.guidance_embedded and isinstance(student.scheduler, DDIMScheduler)
    loaded = MnistDiffusionPipeline.from_pretrained(first)
    assert isinstance(loaded.scheduler, DDIMScheduler)
    assert loaded.scheduler.config.timestep_spacing == "trailing" and loaded.scheduler.config.set_alpha_to_one
    teacher_weights = load_file(teacher / "unet" / "diffusion_pytorch_model.safetensors")
    first_weights = load_file(first / "unet" / "diffusion_pytorch_model.safetensors")
    assert set(first_weights) - set(teacher_weights) == {"time_embedding.cond_proj.weight"}
    assert first_weights["time_embedding.cond_proj.weight"].abs().sum() > 0  # the guidance projection learned

    # Round 2 takes round 1's student as its teacher (no unconditional pass) and starts from its weights.
    args = distill_args(first, parquet_dataset, second, *common, "--num_student_steps", "2")
    second_student = distill_module.main(distill_module.parse_args(args))
    second_weights = load_file(second / "unet" / "diffusion_pytorch_model.safetensors")
    assert second_weights.keys() == first_weights.keys()
    assert not torch.equal(second_weights["conv_out.weight"], first_weights["conv_out.weight"])
    second_student.set_progress_bar_config(disable=True)
    batches = []
    second_student.unet.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    images = second_student("a 3", class_labels=3, num_inference_steps=2, guidance_scale=1.5, output_type="np").images
    assert images.shape == (1, 8, 8, 1) and np.isfinite(images).all() and batches == [1, 1]


@pytest.mark.slow
def test_resume_continues_at_the_same_step_with_the_same_result(distill_module, teacher, parquet_dataset, tmp_path):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    common = ["--max_train_steps", "4", "--checkpointing_steps", "2", "--validation_steps", "0", "--report_to", "none"]
    distill_module.main(distill_module.parse_args(distill_args(teacher, parquet_dataset, full, *common)))
    assert sorted(p.name for p in full.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]

    args = distill_args(
        teacher, parquet_dataset, resumed, *common, "--resume_from_checkpoint", str(full / "checkpoint-2")
    )
    distill_module.main(distill_module.parse_args(args))
    assert sorted(p.name for p in resumed.glob("checkpoint-*")) == ["checkpoint-4"]
    expected = load_file(full / "unet" / "diffusion_pytorch_model.safetensors")
    actual = load_file(resumed / "unet" / "diffusion_pytorch_model.safetensors")
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, msg=f"{name} differs after resuming")

    # Without --resume_from_checkpoint, a folder with checkpoints is refused and left as it was.
    with pytest.raises(ValueError, match="pass --resume_from_checkpoint latest"):
        distill_module.main(distill_module.parse_args(distill_args(teacher, parquet_dataset, full, *common)))
    assert load_file(full / "unet" / "diffusion_pytorch_model.safetensors").keys() == expected.keys()


@pytest.mark.parametrize(
    "kind, message",
    [
        ("10 classes", "has 10 classes; expected 4, the classes of --dataset_name"),
        ("no text encoder", "has no text encoder, but --caption_mode 'label\\+style' asks for prompts"),
        ("a student", "is already a guidance-embedded \\(distilled\\) model"),
        ("empty folder", "could not be loaded as an MnistDiffusionPipeline"),
    ],
)
def test_a_teacher_that_does_not_fit_is_refused_before_writing(
    distill_module, parquet_dataset, tmp_path, kind, message
):
    folder = tmp_path / "teacher"
    if kind == "10 classes":
        save_teacher(folder, num_classes=10)
    elif kind == "no text encoder":
        save_teacher(folder, text=False)
    elif kind == "a student":
        save_teacher(folder)
        pipe = MnistDiffusionPipeline.from_pretrained(folder)
        pipe.unet = MnistUNet2DConditionModel.from_config(pipe.unet.config, time_cond_proj_dim=8)
        pipe.save_pretrained(folder)
    else:
        folder.mkdir()
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    output_dir = tmp_path / "out"
    with pytest.raises(ValueError, match=message):
        distill_module.main(distill_module.parse_args(distill_args(folder, parquet_dataset, output_dir)))
    assert not output_dir.exists()
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before


def test_class_only_teacher_distils_with_caption_mode_none(distill_module, parquet_dataset, tmp_path):
    teacher = save_teacher(tmp_path / "teacher", text=False)
    output_dir = tmp_path / "student"
    args = distill_args(teacher, parquet_dataset, output_dir, "--caption_mode", "none", "--max_train_steps", "1")
    student = distill_module.main(distill_module.parse_args([*args, "--validation_steps", "0", "--report_to", "none"]))
    assert student.text_encoder is None and student.guidance_embedded
    assert student(class_labels=[1, 2], num_inference_steps=2, output_type="pt").images.shape == (2, 1, 8, 8)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--guidance_scale_min", "0.5"], "--guidance_scale_min 0.5"),
        (["--loss_type", "l1"], "--loss_type is 'l1'"),
        (["--caption_mode", "style"], "--caption_mode is 'style'"),
        (["--num_ddim_timesteps", "0"], "--num_ddim_timesteps is 0"),
        (["--method", "adversarial"], "--method is 'adversarial'; expected one of \\['lcm', 'progressive'\\]"),
        (["--num_student_steps", "0"], "--num_student_steps is 0; expected a positive integer"),
        (["--num_student_steps", "501"], "--num_student_steps is 501; expected at most 500"),
        # the checks train.py shares: no token on the command line, finite numbers
        (["--hub_token", "hf_secret"], "--hub_token is refused"),
        (["--learning_rate", "nan"], "--learning_rate is nan; expected a finite number"),
    ],
)
def test_bad_arguments_are_refused(distill_module, teacher, parquet_dataset, tmp_path, extra, message):
    with pytest.raises(ValueError, match=message):
        distill_module.parse_args(distill_args(teacher, parquet_dataset, tmp_path / "out", *extra))


def test_each_method_has_its_defaults_and_explicit_flags_win(distill_module, teacher, parquet_dataset, tmp_path):
    def parsed(*extra):
        return distill_module.parse_args(distill_args(teacher, parquet_dataset, tmp_path / "out", *extra))

    lcm, progressive = parsed(), parsed("--method", "progressive")
    assert (lcm.learning_rate, lcm.lr_scheduler, lcm.target_ema_decay, lcm.guidance_scale_max) == (
        1e-4, "constant_with_warmup", 0.95, 2.5,
    )  # fmt: skip
    assert (progressive.learning_rate, progressive.lr_scheduler) == (2e-4, "cosine")
    assert (progressive.target_ema_decay, progressive.guidance_scale_max) == (0.99, 2.0)
    mine = parsed("--method", "progressive", "--learning_rate", "5e-5", "--guidance_scale_max", "3")
    assert (mine.learning_rate, mine.guidance_scale_max, mine.lr_scheduler) == (5e-5, 3.0, "cosine")


def test_the_script_prints_one_line_and_exits_2_on_a_bad_value(
    distill_module, teacher, parquet_dataset, tmp_path, capsys
):
    args = distill_args(teacher, parquet_dataset, tmp_path / "out", "--num_ddim_timesteps", "0")
    assert run_script(distill_module.parse_args, distill_module.main, args, script="distill.py") == 2
    assert capsys.readouterr().err == "distill.py: error: --num_ddim_timesteps is 0; expected a positive integer.\n"
    assert not (tmp_path / "out").exists()


def test_student_pipeline_embeds_guidance_and_skips_the_unconditional_pass(tmp_path):
    torch.manual_seed(0)
    pipe = make_tiny_pipeline()
    unet = MnistUNet2DConditionModel.from_config(pipe.unet.config, time_cond_proj_dim=16)
    unet.load_state_dict(pipe.unet.state_dict(), strict=False)
    student = MnistDiffusionPipeline(
        unet=unet,
        scheduler=LCMScheduler.from_config(pipe.scheduler.config),
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        id2label=pipe.config.id2label,
    )
    student.set_progress_bar_config(disable=True)
    batches = []
    hook = student.unet.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))

    def sample(guidance_scale):
        generator = torch.Generator().manual_seed(0)
        return student(
            "a 3", class_labels=[3, 4], num_inference_steps=2, guidance_scale=guidance_scale, generator=generator,
            output_type="pt",
        ).images  # fmt: skip

    assert not torch.allclose(sample(1.0), sample(3.0))
    hook.remove()
    assert batches == [2, 2, 2, 2]  # one pass per step, no unconditional half

    student.save_pretrained(tmp_path / "student")
    loaded = MnistDiffusionPipeline.from_pretrained(tmp_path / "student")
    assert isinstance(loaded.scheduler, LCMScheduler) and loaded.unet.config.time_cond_proj_dim == 16
    assert (tmp_path / "student" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    loaded.set_progress_bar_config(disable=True)
    student = loaded
    torch.testing.assert_close(sample(3.0), sample(3.0))


def test_the_release_schedule_swaps_to_lcm_from_its_config():
    config = MnistDiffusionPipeline.from_pretrained(DIFFUSION_MODEL).scheduler.config
    scheduler = LCMScheduler.from_config(config)
    assert scheduler.config.prediction_type == "v_prediction"
    scheduler.set_timesteps(4)
    assert scheduler.timesteps.tolist() == [999, 759, 499, 259]


def test_the_shipped_fast_model_has_a_guidance_embedded_student_per_step_count():
    fast = MnistDiffusionPipeline.from_pretrained(FAST_DIFFUSION_MODEL)
    assert isinstance(fast.scheduler, DDIMScheduler) and fast.guidance_embedded
    assert fast.scheduler.config.timestep_spacing == "trailing" and fast.scheduler.config.set_alpha_to_one
    assert fast.text_encoder is not None and fast.num_classes == 10
    assert [fast_unet_subfolder(steps) for steps in range(1, 9)] == ["unet_1step", "unet_2step"] + ["unet"] * 6
    for subfolder in FAST_UNET_SUBFOLDERS.values():
        unet = MnistUNet2DConditionModel.from_pretrained(FAST_DIFFUSION_MODEL, subfolder=subfolder)
        assert unet.config.time_cond_proj_dim == fast.unet.config.time_cond_proj_dim
    with pytest.raises(ValueError, match="num_inference_steps is 0; expected a positive integer"):
        fast_unet_subfolder(0)


def test_generate_fast_writes_its_file_with_the_student_of_its_step_count(tmp_path, capsys):
    output = tmp_path / "fast.png"
    assert cli_main(["generate", "a thick 7", "--fast", "--class-label", "7", "-n", "4", "-o", str(output)]) == 0
    assert output.is_file() and "Saved 4 images" in capsys.readouterr().out
    # one step: the 1-step student, whose images differ from the 4-step student's single step
    one = tmp_path / "one.png"
    assert cli_main(["generate", "a thick 7", "--fast", "--steps", "1", "--class-label", "7", "-o", str(one)]) == 0
    pipe = MnistDiffusionPipeline.from_pretrained(FAST_DIFFUSION_MODEL)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    four_step_student = pipe(
        "a thick 7", class_labels=7, num_inference_steps=1, guidance_scale=1.45, generator=generator
    ).images[0]
    first_cell = np.asarray(Image.open(one))[:28, :28]
    assert np.abs(first_cell.astype(int) - np.asarray(four_step_student, dtype=int)).max() > 50
    assert cli_main(["generate", "a 7", "--fast", "--model", str(DIFFUSION_MODEL), "-o", str(tmp_path / "x.png")]) == 2
    assert "--fast uses the shipped few-step model" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
