"""Distil a saved MnistDiffusionPipeline into a few-step student (LCM, or progressive distillation rounds)."""

from __future__ import annotations

import argparse
import copy
import logging
import sys

import torch
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from diffusers import DDIMScheduler, LCMScheduler

from mnist_diffusion import MnistDiffusionPipeline, MnistUNet2DConditionModel
from mnist_diffusion.captions import CAPTION_MODES, TrainingCaptioner, conditioning_dropout
from mnist_diffusion.data import ImageClassDataset
from mnist_diffusion.pretrained import DIFFUSION_MODEL
from mnist_diffusion.schedulers import (
    MnistDDPMScheduler,
    ddim_jump,
    ddim_jump_original,
    predict_original_sample,
)
from mnist_diffusion.training.arguments import (
    add_bookkeeping_arguments,
    add_data_arguments,
    add_optimisation_arguments,
    run_script,
    validate_training_args,
)
from mnist_diffusion.training.loop import (
    build_accelerator,
    build_dataloader,
    check_run,
    finish_run,
    run_script_loop,
    start_run,
    updates_per_epoch_of,
)
from mnist_diffusion.training.optimization import optimizer_from_args
from mnist_diffusion.training.run_folder import load_checkpoint
from mnist_diffusion.training.text_to_image import build_captioner, load_pipeline_flag, load_training_data
from mnist_diffusion.training.validation import log_validation

logger = get_logger(__name__)

LOSS_TYPES = ("huber", "l2")
#: "lcm": latent consistency distillation (1-8 steps from one run); "progressive": one round of progressive
#: distillation (the student takes one DDIM step for two of the teacher's; guidance is distilled in the first round).
METHODS = ("lcm", "progressive")
#: "none" distils class conditioning only (a teacher without text).
DISTILL_CAPTION_MODES = ("none",) + CAPTION_MODES
#: Each method's defaults for the flags left out (None in the parser); a progressive round's are those the shipped
#: students' rounds ran with (model_card.md).
METHOD_DEFAULTS = {
    "lcm": {
        "learning_rate": 1e-4,
        "lr_scheduler": "constant_with_warmup",
        "target_ema_decay": 0.95,
        "guidance_scale_max": 2.5,
    },
    "progressive": {
        "learning_rate": 2e-4,
        "lr_scheduler": "cosine",
        "target_ema_decay": 0.99,
        "guidance_scale_max": 2.0,
    },
}


def parse_args(input_args: list[str] | None = None) -> argparse.Namespace:
    r"""
    Parse and validate the command line; every bad value raises `ValueError` naming it and what was expected.

    Example:

    ```py
    >>> from training.distill import parse_args  # run from the repository root

    >>> args = parse_args(["--dataset_name", "ylecun/mnist", "--output_dir", "out", "--max_train_steps", "10"])
    >>> args.num_ddim_timesteps, args.validation_inference_steps
    (50, 4)
    ```
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--teacher_model_name_or_path",
        default=str(DIFFUSION_MODEL),
        help="The MnistDiffusionPipeline to distil (folder or Hub id; default: the released model).",
    )
    data = parser.add_argument_group("data (the images the teacher was trained on)")
    add_data_arguments(data, caption_modes=DISTILL_CAPTION_MODES)

    distil = parser.add_argument_group("distillation")
    distil.add_argument("--method", default="lcm", help=f"One of {list(METHODS)}.")
    distil.add_argument(
        "--num_student_steps",
        type=int,
        default=8,
        help="--method progressive: the student's DDIM steps; the teacher takes twice as many (one round).",
    )
    distil.add_argument(
        "--num_ddim_timesteps",
        type=int,
        default=50,
        help="--method lcm: the teacher's DDIM solver grid; each target is one DDIM step of 1000 / N timesteps.",
    )
    distil.add_argument("--guidance_scale_min", type=float, default=1.0, help="Guidance scales sampled per image.")
    distil.add_argument(
        "--guidance_scale_max", type=float, default=None, help="Default: 2.5 (lcm), 2.0 (progressive)."
    )
    distil.add_argument("--time_cond_proj_dim", type=int, default=32, help="Width of the guidance-scale embedding.")
    distil.add_argument(
        "--target_ema_decay",
        type=float,
        default=None,
        help="EMA of the student, the saved network (LCM's target). Default: 0.95 (lcm), 0.99 (progressive).",
    )
    distil.add_argument("--loss_type", default="huber", help=f"One of {list(LOSS_TYPES)}.")
    distil.add_argument("--huber_c", type=float, default=0.001)

    add_optimisation_arguments(parser.add_argument_group("optimisation"))
    add_bookkeeping_arguments(parser.add_argument_group("bookkeeping"))
    parser.set_defaults(
        cond_dropout_prob=0.05,
        class_dropout_prob=0.2,
        output_dir="mnist-diffusion-fast",
        max_train_steps=2000,
        train_batch_size=64,
        learning_rate=None,  # METHOD_DEFAULTS
        lr_scheduler=None,
        optimizer="adamw",
        adam_weight_decay=0.0,
        validation_inference_steps=4,
        validation_guidance_scale=1.4,
    )
    args = parser.parse_args(input_args)
    if args.method not in METHODS:
        raise ValueError(f"--method is {args.method!r}; expected one of {list(METHODS)}.")
    for name, value in METHOD_DEFAULTS[args.method].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    validate_args(args)
    return args


def validate_args(args: argparse.Namespace) -> None:
    """Check value ranges and choices of the parsed arguments (the shared groups' checks first)."""
    validate_training_args(args, caption_modes=DISTILL_CAPTION_MODES)
    if args.loss_type not in LOSS_TYPES:
        raise ValueError(f"--loss_type is {args.loss_type!r}; expected one of {list(LOSS_TYPES)}.")
    for name in ("num_ddim_timesteps", "num_student_steps", "time_cond_proj_dim"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} is {getattr(args, name)}; expected a positive integer.")
    if args.num_student_steps > 500:
        raise ValueError(f"--num_student_steps is {args.num_student_steps}; expected at most 500 (1000 timesteps).")
    if not 1 <= args.guidance_scale_min <= args.guidance_scale_max:
        raise ValueError(
            f"--guidance_scale_min {args.guidance_scale_min}, --guidance_scale_max {args.guidance_scale_max}; "
            "expected 1 <= min <= max."
        )
    if not 0 <= args.target_ema_decay < 1 or args.huber_c <= 0:
        raise ValueError(
            f"Got --target_ema_decay {args.target_ema_decay}, --huber_c {args.huber_c}; expected a decay in [0, 1) "
            "and huber_c > 0."
        )


def load_teacher(args: argparse.Namespace) -> MnistDiffusionPipeline:
    r"""
    The teacher pipeline, refused (`ValueError`) when it cannot teach what the arguments ask: no text encoder while
    prompts are distilled, no class conditioning, or (for LCM) a guidance embedding of its own (already distilled). A
    progressive round takes either the multi-step model (guidance is distilled in that first round) or the student of
    the previous round.
    """
    name = args.teacher_model_name_or_path
    teacher = load_pipeline_flag("--teacher_model_name_or_path", name)
    if teacher.text_encoder is None and args.caption_mode != "none":
        raise ValueError(
            f"--teacher_model_name_or_path {name!r} has no text encoder, but --caption_mode {args.caption_mode!r} "
            "asks for prompts; pass --caption_mode none to distil its class conditioning only."
        )
    if not teacher.num_classes:
        raise ValueError(
            f"--teacher_model_name_or_path {name!r} has no class conditioning; expected a class-conditioned teacher."
        )
    if teacher.guidance_embedded and args.method == "lcm":
        raise ValueError(
            f"--teacher_model_name_or_path {name!r} is already a guidance-embedded (distilled) model; expected the "
            "multi-step teacher."
        )
    teacher.set_progress_bar_config(disable=True)
    return teacher


def student_pipeline(
    unet: MnistUNet2DConditionModel, teacher: MnistDiffusionPipeline, scheduler: LCMScheduler | DDIMScheduler
) -> MnistDiffusionPipeline:
    """An eval-mode pipeline around the student UNet with the teacher's text encoder, tokenizer and class names."""
    return MnistDiffusionPipeline(
        unet=unet.eval(),
        scheduler=type(scheduler).from_config(scheduler.config),
        text_encoder=teacher.text_encoder,
        tokenizer=teacher.tokenizer,
        id2label=teacher.config.id2label,
    )


def build_student(teacher_unet: MnistUNet2DConditionModel, time_cond_proj_dim: int) -> MnistUNet2DConditionModel:
    """The teacher's UNet plus a zero-initialised guidance-scale projection: at first it predicts as the teacher."""
    student = MnistUNet2DConditionModel.from_config(teacher_unet.config, time_cond_proj_dim=time_cond_proj_dim)
    missing, unexpected = student.load_state_dict(teacher_unet.state_dict(), strict=False)
    if unexpected or any(not key.startswith("time_embedding.cond_proj.") for key in missing):
        raise ValueError(f"The teacher's UNet does not fit the student: missing {missing}, unexpected {unexpected}.")
    torch.nn.init.zeros_(student.time_embedding.cond_proj.weight)
    return student


def consistency_prediction(
    scheduler: LCMScheduler, sample: torch.Tensor, model_output: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    r"""
    The consistency function `c_skip(t) x_t + c_out(t) x_0(x_t, model_output)`, with the scheduler's boundary
    scalings (`c_skip = 1`, `c_out = 0` at t = 0), as `LCMScheduler.step` denoises.
    """
    c_skip, c_out = scheduler.get_scalings_for_boundary_condition_discrete(timesteps.float())
    shape = (-1,) + (1,) * (sample.ndim - 1)
    original = predict_original_sample(scheduler, sample, model_output, timesteps)
    return c_skip.reshape(shape) * sample + c_out.reshape(shape) * original


def main(args: argparse.Namespace) -> MnistDiffusionPipeline | None:
    r"""
    Distil the teacher and save the student pipeline in `args.output_dir` (with an `LCMScheduler`, or for a
    progressive round a `DDIMScheduler` with trailing timesteps); returns it on the main process.

    Example:

    ```py
    >>> from training.distill import main, parse_args

    >>> main(parse_args(["--dataset_name", "ylecun/mnist", "--output_dir", "fast", "--max_train_steps", "100"]))
    >>> # progressive distillation: one round per halving, each from the previous round's student
    >>> main(parse_args(["--dataset_name", "ylecun/mnist", "--output_dir", "pd8", "--method", "progressive",
    ...                  "--num_student_steps", "8"]))
    >>> main(parse_args(["--dataset_name", "ylecun/mnist", "--output_dir", "pd4", "--method", "progressive",
    ...                  "--num_student_steps", "4", "--teacher_model_name_or_path", "pd8"]))
    ```
    """
    resume_path = check_run(args)  # the output folder, the checkpoint to resume from, the Hub token
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    set_seed(args.seed)

    # The teacher and the data, checked against each other before anything is written.
    teacher = load_teacher(args)
    data = load_training_data(args, teacher.unet.config.sample_size)
    if teacher.num_classes != len(data.label_names):
        raise ValueError(
            f"--teacher_model_name_or_path {args.teacher_model_name_or_path!r} has {teacher.num_classes} classes; "
            f"expected {len(data.label_names)}, the classes of --dataset_name {args.dataset_name!r}."
        )

    accelerator = build_accelerator(args)
    dataset = ImageClassDataset(data)
    train_dataloader = build_dataloader(dataset, args)

    # Teacher (frozen), student (trained) and target (EMA of the student, what is saved); the student's timesteps:
    # LCM's solver grid, or the DDIM grid of the progressive student's steps.
    teacher_unet, text_encoder, tokenizer = teacher.unet, teacher.text_encoder, teacher.tokenizer
    noise_scheduler = MnistDDPMScheduler.from_config(teacher.scheduler.config)
    if args.method == "lcm":
        scheduler = LCMScheduler.from_config(noise_scheduler.config, original_inference_steps=args.num_ddim_timesteps)
        scheduler.set_timesteps(args.num_ddim_timesteps)
        solver_timesteps = scheduler.timesteps.flip(0).long()
        skip = scheduler.config.num_train_timesteps // args.num_ddim_timesteps
    else:
        scheduler = DDIMScheduler.from_config(
            noise_scheduler.config, set_alpha_to_one=True, timestep_spacing="trailing"
        )
        scheduler.set_timesteps(args.num_student_steps)
        solver_timesteps = scheduler.timesteps.long()
        skip = scheduler.config.num_train_timesteps // args.num_student_steps  # DDIMScheduler.step's stride
    if teacher.guidance_embedded:  # a progressive round from the previous round's student
        student, embedding_dim = copy.deepcopy(teacher_unet), teacher_unet.config.time_cond_proj_dim
    else:
        student, embedding_dim = build_student(teacher_unet, args.time_cond_proj_dim), args.time_cond_proj_dim
    target = copy.deepcopy(student).requires_grad_(False)
    teacher_unet.requires_grad_(False).eval()
    if text_encoder is not None:
        text_encoder.requires_grad_(False).eval()
    null_class = teacher.null_class_label
    captioner = None  # prompts (and their dropout) for a text teacher; --caption_mode none distils classes only
    if text_encoder is not None and args.caption_mode != "none":
        captioner = build_captioner(args, data, tokenizer)

    set_seed(args.seed, device_specific=True)
    named_params = list(student.named_parameters())
    params = [param for _, param in named_params]
    updates_per_epoch = updates_per_epoch_of(args, len(dataset), accelerator)
    optimizer, lr_scheduler = optimizer_from_args(args, named_params, args.max_train_steps, accelerator.num_processes)
    student, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(
        student, optimizer, train_dataloader, lr_scheduler
    )
    for model in (teacher_unet, target, text_encoder):
        if model is not None:
            model.to(accelerator.device)
    accelerator.register_for_checkpointing(target)
    solver_timesteps = solver_timesteps.to(accelerator.device)

    # before training_args.json is rewritten: a failed resume leaves the run as it was
    global_step = load_checkpoint(accelerator, resume_path)
    start_run(accelerator, args, "mnist-diffusion-distill")
    logger.info(
        f"Distilling {args.teacher_model_name_or_path} on {len(dataset)} images for {args.max_train_steps} steps "
        f"(batch {args.train_batch_size} x {accelerator.num_processes} processes x {args.gradient_accumulation_steps})"
    )

    unconditional = None  # the teacher's empty prompt, for the unconditional half of its guidance
    if captioner is not None:
        with torch.no_grad():
            unconditional = teacher.encode_prompt("", accelerator.device, do_classifier_free_guidance=False)[:2]

    def compute_loss(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        conditioning = batch_conditioning(batch, args, captioner, null_class, text_encoder, unconditional)
        if args.method == "progressive":
            return progressive_distillation_loss(
                batch["pixel_values"], conditioning, args, teacher_unet, teacher.guidance_embedded,
                student, noise_scheduler, solver_timesteps, skip, embedding_dim,
            )  # fmt: skip
        return distillation_loss(
            batch["pixel_values"], conditioning, args,
            teacher_unet, student, target, noise_scheduler, scheduler, solver_timesteps, skip,
        )  # fmt: skip

    def after_update() -> None:
        with torch.no_grad():
            for target_param, param in zip(
                target.parameters(), accelerator.unwrap_model(student).parameters(), strict=True
            ):
                target_param.lerp_(param.detach(), 1 - args.target_ema_decay)

    run_script_loop(
        accelerator,
        args,
        train_dataloader,
        [student],
        params,
        optimizer,
        lr_scheduler,
        compute_loss=compute_loss,
        global_step=global_step,
        max_train_steps=args.max_train_steps,
        updates_per_epoch=updates_per_epoch,
        after_update=after_update,
        validate=lambda step: log_validation(student_pipeline(target, teacher, scheduler), args, accelerator, step),
    )
    return finish_run(accelerator, args, lambda: student_pipeline(target, teacher, scheduler))


def batch_conditioning(
    batch: dict[str, torch.Tensor],
    args: argparse.Namespace,
    captioner: TrainingCaptioner | None,
    null_class: int,
    text_encoder: torch.nn.Module | None,
    unconditional: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    r"""
    The student's conditioning of one batch (prompts and class labels with train.py's dropout) and the teacher's
    for classifier-free guidance: the unconditional half (empty prompt, null class) then the student's.
    """
    labels, bsz = batch["labels"], batch["labels"].shape[0]
    conditioning, guided = {}, {}
    if captioner is not None:
        prompts = captioner(labels, batch["indices"])
        attention_mask, class_labels = prompts.attention_mask, prompts.class_labels
        with torch.no_grad():
            hidden_states = text_encoder(prompts.input_ids, attention_mask=attention_mask)[0]
        conditioning = {"encoder_hidden_states": hidden_states, "encoder_attention_mask": attention_mask}
        empty_states, empty_mask = (u.expand(bsz, *u.shape[1:]) for u in unconditional)
        guided = {
            "encoder_hidden_states": torch.cat([empty_states, hidden_states]),
            "encoder_attention_mask": torch.cat([empty_mask, attention_mask]),
        }
    else:
        _, drop_class = conditioning_dropout(bsz, args.cond_dropout_prob, args.class_dropout_prob)
        class_labels = torch.where(drop_class.to(labels.device), torch.full_like(labels, null_class), labels)
    conditioning["class_labels"] = class_labels
    guided["class_labels"] = torch.cat([torch.full_like(class_labels, null_class), class_labels])
    return conditioning, guided


def sample_guidance_scales(args: argparse.Namespace, bsz: int, device: torch.device) -> torch.Tensor:
    """One guidance scale per image, uniform on [--guidance_scale_min, --guidance_scale_max]."""
    low, high = args.guidance_scale_min, args.guidance_scale_max
    return low + (high - low) * torch.rand(bsz, device=device)


def guided_prediction(
    teacher_unet: torch.nn.Module,
    sample: torch.Tensor,
    timesteps: torch.Tensor,
    guided: dict[str, torch.Tensor],
    scales: torch.Tensor,
) -> torch.Tensor:
    """The multi-step teacher's output with classifier-free guidance at `scales` (one batched pass of both halves)."""
    both = teacher_unet(torch.cat([sample, sample]), torch.cat([timesteps, timesteps]), **guided).sample
    uncond, cond = both.chunk(2)
    return uncond + scales[:, None, None, None] * (cond - uncond)


def distillation_loss(
    pixel_values: torch.Tensor,
    conditionings: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]],
    args: argparse.Namespace,
    teacher_unet: torch.nn.Module,
    student: torch.nn.Module,
    target: torch.nn.Module,
    noise_scheduler: MnistDDPMScheduler,
    scheduler: LCMScheduler,
    solver_timesteps: torch.Tensor,
    skip: int,
) -> torch.Tensor:
    r"""
    The latent consistency distillation loss of one batch (Luo et al. 2023, pixel space here).

    Each image is noised to a timestep `t` of the solver grid; the teacher, with classifier-free guidance at a scale
    `w` drawn per image, takes one deterministic DDIM step to `t - skip`; the student's consistency function at `t`
    (given the embedding of `w`) must match the target network's at `t - skip` (Huber or squared distance).
    """
    conditioning, guided = conditionings
    bsz, device = pixel_values.shape[0], pixel_values.device
    noise = torch.randn_like(pixel_values)
    index = torch.randint(0, len(solver_timesteps), (bsz,), device=device)
    timesteps = solver_timesteps[index]
    previous = (timesteps - skip).clamp(min=0)
    noisy = noise_scheduler.add_noise(pixel_values, noise, timesteps)
    scales = sample_guidance_scales(args, bsz, device)
    embedding = MnistDiffusionPipeline.get_guidance_scale_embedding(scales, args.time_cond_proj_dim).to(device)

    prediction = student(noisy, timesteps, timestep_cond=embedding, **conditioning).sample
    prediction = consistency_prediction(scheduler, noisy, prediction, timesteps)
    with torch.no_grad():
        guided_output = guided_prediction(teacher_unet, noisy, timesteps, guided, scales)
        solver_sample = ddim_jump(noise_scheduler, noisy, guided_output, timesteps, previous)
        target_output = target(solver_sample, previous, timestep_cond=embedding, **conditioning).sample
        target_prediction = consistency_prediction(scheduler, solver_sample, target_output, previous)
    if args.loss_type == "huber":
        per_pixel = torch.sqrt((prediction.float() - target_prediction.float()) ** 2 + args.huber_c**2) - args.huber_c
    else:
        per_pixel = (prediction.float() - target_prediction.float()) ** 2
    return per_pixel.mean()


def progressive_distillation_loss(
    pixel_values: torch.Tensor,
    conditionings: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]],
    args: argparse.Namespace,
    teacher_unet: torch.nn.Module,
    teacher_embedded: bool,
    student: torch.nn.Module,
    noise_scheduler: MnistDDPMScheduler,
    student_timesteps: torch.Tensor,
    stride: int,
    embedding_dim: int,
) -> torch.Tensor:
    r"""
    The loss of one round of progressive distillation (Salimans and Ho 2022; guidance as in Meng et al. 2023).

    Each image is noised to a timestep `t` of the student's DDIM grid; the teacher takes two deterministic DDIM steps,
    `t -> (t + s) / 2 -> s` with `s = t - stride` (-1: the clean image), with classifier-free guidance at a scale `w`
    drawn per image (a multi-step teacher) or `w` as its embedding (the previous round's student). The student, given
    the embedding of `w`, must predict the x_0 whose single DDIM step from `t` lands where the teacher's two did;
    squared error in x_0, weighted by max(SNR(t), 1) ("truncated SNR").
    """
    conditioning, guided = conditionings
    bsz, device = pixel_values.shape[0], pixel_values.device
    noise = torch.randn_like(pixel_values)
    timesteps = student_timesteps[torch.randint(0, len(student_timesteps), (bsz,), device=device)]
    following = (timesteps - stride).clamp(min=-1)
    middle = torch.div(timesteps + following, 2, rounding_mode="floor")
    noisy = noise_scheduler.add_noise(pixel_values, noise, timesteps)
    scales = sample_guidance_scales(args, bsz, device)
    embedding = MnistDiffusionPipeline.get_guidance_scale_embedding(scales, embedding_dim).to(device)

    def teacher_output(sample: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        if teacher_embedded:
            return teacher_unet(sample, at, timestep_cond=embedding, **conditioning).sample
        return guided_prediction(teacher_unet, sample, at, guided, scales)

    with torch.no_grad():
        halfway = ddim_jump(noise_scheduler, noisy, teacher_output(noisy, timesteps), timesteps, middle)
        landing = ddim_jump(noise_scheduler, halfway, teacher_output(halfway, middle), middle, following)
        target_original = ddim_jump_original(noise_scheduler, noisy, timesteps, landing, following)
    prediction = student(noisy, timesteps, timestep_cond=embedding, **conditioning).sample
    original = predict_original_sample(noise_scheduler, noisy, prediction, timesteps)
    weights = noise_scheduler.snr(timesteps).clamp(min=1.0)
    per_image = ((original.float() - target_original.float()) ** 2).mean(dim=(1, 2, 3))
    return (weights * per_image).mean()


if __name__ == "__main__":
    sys.exit(run_script(parse_args, main, script="distill.py"))
