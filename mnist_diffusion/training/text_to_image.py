"""The text-to-image recipe of `training/train.py`: flags, models, captions and loss, for scripts and benchmarks."""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from transformers import CLIPTextModel, CLIPTokenizer
from transformers.utils import logging as transformers_logging

from ..captions import TrainingCaptioner, measure_style
from ..data import ImageClassData, load_split, prepare_training_data
from ..models import MnistUNet2DConditionModel
from ..pipelines import MnistDiffusionPipeline
from ..pretrained import MNIST_CLIP
from ..schedulers import MnistDDPMScheduler
from ..text_encoding import build_caption_tokenizer, build_text_encoder
from .arguments import (
    add_bookkeeping_arguments,
    add_data_arguments,
    add_optimisation_arguments,
    parse_int_list,
    validate_training_args,
)
from .run_folder import EVAL_HISTORY_FILE

PREDICTION_TYPES = ("epsilon", "v_prediction")
# --text_encoder_name_or_path values besides a folder or Hub id: build a small encoder, or pick by the dataset.
BUILD_TEXT_ENCODER = "build"
AUTO_TEXT_ENCODER = "auto"
#: The classes for which "auto" picks the bundled MNIST-CLIP text tower (it was trained on digit captions).
DIGIT_LABELS = [str(digit) for digit in range(10)]
# Flags that describe the models to build; a fine-tuned pipeline (--pretrained_model_name_or_path) brings its own.
ARCHITECTURE_FLAGS = (
    "block_out_channels",
    "layers_per_block",
    "attention_levels",
    "attention_head_dim",
    "patch_size",
    "upsample_type",
    "text_encoder_name_or_path",
    "text_encoder_hidden_size",
    "prediction_type",
)


def parse_args(input_args: list[str] | None = None) -> argparse.Namespace:
    r"""
    Parse and validate the command line; every bad value raises `ValueError` naming it and what was expected.

    Example:

    ```py
    >>> from mnist_diffusion.training.text_to_image import parse_args

    >>> args = parse_args(["--output_dir", "out", "--max_train_steps", "10"])
    >>> args.block_out_channels, args.caption_mode
    ((32, 64), 'label+style')
    ```
    """
    parser = argparse.ArgumentParser(description=__doc__)
    data = parser.add_argument_group("data")
    add_data_arguments(data)
    data.add_argument("--resolution", type=int, default=28, help="Images are resized only if their size differs.")
    data.add_argument("--dataloader_num_workers", type=int, default=0)

    model = parser.add_argument_group("model")
    model.add_argument(
        "--pretrained_model_name_or_path",
        default=None,
        help="Fine-tune a saved MnistDiffusionPipeline (folder or Hub id): start from its UNet, text encoder, "
        "tokenizer and noise schedule. The flags below that describe the models must then stay unset.",
    )
    model.add_argument("--block_out_channels", default="32,64", help="UNet channels per level.")
    model.add_argument("--layers_per_block", type=int, default=1)
    model.add_argument("--attention_levels", default="0,1", help="1/0 per level: self- and cross-attention.")
    model.add_argument("--attention_head_dim", type=int, default=32)
    model.add_argument(
        "--patch_size",
        type=int,
        default=2,
        help="Pixels per side folded into channels before the first level (1: none; 2: the first level runs at 14x14, "
        "about half the cost per image).",
    )
    model.add_argument(
        "--upsample_type",
        default="conv_transpose",
        choices=["interpolate", "conv_transpose"],
        help="Upsampling on the way up: nearest + 3x3 conv (interpolate) or a 2x2 transposed conv to the next width.",
    )
    model.add_argument(
        "--text_encoder_name_or_path",
        default=AUTO_TEXT_ENCODER,
        help="A CLIP text encoder and tokenizer (folder or Hub id; a saved pipeline works too), frozen unless "
        f"--train_text_encoder; {BUILD_TEXT_ENCODER!r}: a small encoder built from the caption vocabulary and trained "
        f"jointly; {AUTO_TEXT_ENCODER!r} (default): the bundled MNIST-CLIP text tower for the digits 0-9, else "
        f"{BUILD_TEXT_ENCODER!r}.",
    )
    model.add_argument(
        "--train_text_encoder",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Train the text encoder jointly (default: yes for the built one, no for a loaded one).",
    )
    model.add_argument("--text_encoder_hidden_size", type=int, default=64, help="Hidden size of a built encoder.")
    model.add_argument(
        "--prediction_type",
        default="v_prediction",
        help=f"One of {list(PREDICTION_TYPES)}; v_prediction (default) keeps few-step samplers stable, see README.",
    )

    optim = parser.add_argument_group("optimisation")
    add_optimisation_arguments(optim)
    optim.add_argument(
        "--num_epochs",
        type=int,
        default=7,
        help="Passes over the training data; --max_train_steps overrides it.",
    )
    optim.add_argument(
        "--snr_gamma", type=float, default=0.0, help="Min-SNR-gamma loss weighting (e.g. 5); 0 (default): plain MSE."
    )
    optim.add_argument(
        "--timestep_log_snr_mean",
        type=float,
        default=None,
        help="Draw training timesteps with log(SNR) ~ N(mean, std^2) (0: equal signal and noise), not uniformly.",
    )
    optim.add_argument("--timestep_log_snr_std", type=float, default=2.0, help="See --timestep_log_snr_mean.")
    optim.add_argument("--use_ema", action=argparse.BooleanOptionalAction, default=True)
    optim.add_argument("--ema_max_decay", type=float, default=0.999)
    optim.add_argument("--ema_power", type=float, default=0.75, help="EMA warmup: decay = 1 - (1 + step) ** -power.")

    add_bookkeeping_arguments(parser.add_argument_group("bookkeeping"))

    evaluation = parser.add_argument_group("evaluation (at every validation step)")
    evaluation.add_argument(
        "--eval_classifier",
        default=None,
        help="A saved MnistClassifier (e.g. mnist_diffusion/pretrained/mnist-classifier). At every validation step, "
        "--eval_num_samples samples (with the validation steps and guidance scale) are drawn and scored as "
        "`mnist-diffusion evaluate` does (label + class prompt, sample i from seed --seed + i): conditional accuracy "
        f"and classifier FID against real images; logged as eval/* and to {EVAL_HISTORY_FILE}.",
    )
    evaluation.add_argument(
        "--eval_num_samples",
        type=int,
        default=None,
        help="Samples per evaluation, a multiple of the classes (default: 25 per class, 250 for 10 classes).",
    )
    evaluation.add_argument(
        "--eval_dataset", default=None, help="Real reference images (Hub id or folder); default: --dataset_name."
    )
    evaluation.add_argument("--eval_split", default="test", help="The split of --eval_dataset to compare with.")

    args = parser.parse_args(input_args)
    if args.pretrained_model_name_or_path:
        for name in ARCHITECTURE_FLAGS:
            if getattr(args, name) != parser.get_default(name):
                raise ValueError(
                    f"--{name} is {getattr(args, name)!r}, but --pretrained_model_name_or_path "
                    f"{args.pretrained_model_name_or_path!r} brings its own models; expected --{name} to stay unset."
                )
            setattr(args, name, None)  # unused, and recorded as such in training_args.json
    else:
        args.block_out_channels = parse_int_list("--block_out_channels", args.block_out_channels)
        args.attention_levels = tuple(bool(v) for v in parse_int_list("--attention_levels", args.attention_levels))
    validate_args(args)
    return args


def validate_args(args: argparse.Namespace) -> None:
    """Check value ranges and combinations of the parsed arguments (the shared groups' checks first)."""
    validate_training_args(args)
    fine_tuning = args.pretrained_model_name_or_path is not None
    prediction_types = ((None,) if fine_tuning else ()) + PREDICTION_TYPES
    if args.prediction_type not in prediction_types:
        raise ValueError(
            f"--prediction_type is {args.prediction_type!r}; expected one of {[a for a in prediction_types if a]}."
        )
    if args.eval_classifier and not args.validation_steps:
        raise ValueError("--eval_classifier scores samples at validation steps, but --validation_steps is 0.")
    if args.eval_num_samples is not None and args.eval_num_samples < 2:
        raise ValueError(f"--eval_num_samples is {args.eval_num_samples}; expected at least 2 (for classifier FID).")
    positive = ("num_epochs", "resolution")
    if not fine_tuning:  # a loaded UNet is checked against the data when it is loaded
        if len(args.attention_levels) != len(args.block_out_channels):
            raise ValueError(
                f"--attention_levels has {len(args.attention_levels)} entries for {len(args.block_out_channels)} "
                "levels in --block_out_channels; expected one per level."
            )
        positive += ("layers_per_block", "patch_size", "attention_head_dim")
    for name in positive:
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} is {getattr(args, name)}; expected a positive integer.")
    if not fine_tuning:
        factor = args.patch_size * 2 ** (len(args.block_out_channels) - 1)
        if args.resolution % factor:
            raise ValueError(
                f"--resolution is {args.resolution}; expected a positive multiple of {factor} for this UNet."
            )
    if args.dataloader_num_workers < 0:
        raise ValueError(f"--dataloader_num_workers is {args.dataloader_num_workers}; expected 0 or more.")
    if args.snr_gamma < 0 or not 0 < args.ema_max_decay < 1:
        raise ValueError(
            f"Got --snr_gamma {args.snr_gamma}, --ema_max_decay {args.ema_max_decay}; expected snr_gamma >= 0 and a "
            "decay in (0, 1)."
        )
    if args.timestep_log_snr_std <= 0:
        raise ValueError(f"--timestep_log_snr_std is {args.timestep_log_snr_std}; expected a value > 0.")


def resolve_text_encoder(args: argparse.Namespace, label_names: list[str]) -> None:
    r"""
    Settle `--text_encoder_name_or_path` (`"auto"`: the bundled MNIST-CLIP text tower when the classes are the digits
    0-9, a built encoder otherwise) and `--train_text_encoder` (default: train a built encoder, freeze a loaded one).
    """
    if args.pretrained_model_name_or_path is None and args.text_encoder_name_or_path == AUTO_TEXT_ENCODER:
        args.text_encoder_name_or_path = str(MNIST_CLIP) if label_names == DIGIT_LABELS else BUILD_TEXT_ENCODER
    if args.train_text_encoder is None:
        args.train_text_encoder = args.text_encoder_name_or_path == BUILD_TEXT_ENCODER


def load_text_encoder(name_or_path: str) -> tuple[CLIPTokenizer, CLIPTextModel]:
    """A CLIP tokenizer and text encoder from a folder or Hub id: its `tokenizer`/`text_encoder` subfolders or root."""
    errors = []
    for tokenizer_subfolder, encoder_subfolder in (("tokenizer", "text_encoder"), ("", "")):
        try:
            tokenizer = CLIPTokenizer.from_pretrained(name_or_path, subfolder=tokenizer_subfolder)
            # A whole CLIP model (MNIST-CLIP's folder) also holds a vision tower, whose weights are meant to be left
            # out: no load report listing them.
            verbosity = transformers_logging.get_verbosity()
            transformers_logging.set_verbosity_error()
            try:
                return tokenizer, CLIPTextModel.from_pretrained(name_or_path, subfolder=encoder_subfolder)
            finally:
                transformers_logging.set_verbosity(verbosity)
        except (OSError, ValueError) as error:
            errors.append(str(error).splitlines()[0])
    raise ValueError(
        f"--text_encoder_name_or_path {name_or_path!r} holds no CLIP tokenizer and text encoder (at its root or in "
        f"tokenizer/ and text_encoder/): {errors}"
    )


def build_models(
    args: argparse.Namespace, num_classes: int
) -> tuple[CLIPTokenizer, CLIPTextModel, MnistUNet2DConditionModel, MnistDDPMScheduler]:
    r"""
    The tokenizer, text encoder, UNet and noise scheduler to train: those of `--pretrained_model_name_or_path`, or
    built as the arguments describe.

    A built UNet is conditioned on the text (`cross_attention_dim` = the encoder's hidden size, the encoder loaded or
    built from the caption vocabulary) and on the class (`num_class_embeds = num_classes + 1`, the last id being the
    null class). A loaded pipeline must have a text encoder, that many class embeddings and the training resolution.
    """
    if args.pretrained_model_name_or_path:
        tokenizer, text_encoder, unet, scheduler = load_pretrained_models(args.pretrained_model_name_or_path)
        found = {"num_class_embeds": unet.config.num_class_embeds, "sample_size": unet.config.sample_size}
        expected = {"num_class_embeds": num_classes + 1, "sample_size": args.resolution}
        if found != expected:
            raise ValueError(
                f"--pretrained_model_name_or_path {args.pretrained_model_name_or_path!r} has a UNet with {found}; "
                f"expected {expected} for {num_classes} classes at --resolution {args.resolution}."
            )
    else:
        if args.text_encoder_name_or_path != BUILD_TEXT_ENCODER:
            tokenizer, text_encoder = load_text_encoder(args.text_encoder_name_or_path)
        else:
            tokenizer = build_caption_tokenizer()
            text_encoder = build_text_encoder(tokenizer, hidden_size=args.text_encoder_hidden_size)
        unet = MnistUNet2DConditionModel(
            sample_size=args.resolution,
            block_out_channels=args.block_out_channels,
            layers_per_block=args.layers_per_block,
            attention_levels=args.attention_levels,
            attention_head_dim=args.attention_head_dim,
            cross_attention_dim=text_encoder.config.hidden_size,
            num_class_embeds=num_classes + 1,
            norm_num_groups=min(8, min(args.block_out_channels)),
            patch_size=args.patch_size,
            upsample_type=args.upsample_type,
        )
        scheduler = MnistDDPMScheduler(prediction_type=args.prediction_type)
    text_encoder.requires_grad_(args.train_text_encoder)
    unet.requires_grad_(True)
    return tokenizer, text_encoder, unet, scheduler


def load_pipeline_flag(flag: str, name_or_path: str) -> MnistDiffusionPipeline:
    """The `MnistDiffusionPipeline` that `flag` names (folder or Hub id); if none loads, `ValueError` naming it."""
    try:
        return MnistDiffusionPipeline.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{flag} {name_or_path!r} could not be loaded as an MnistDiffusionPipeline "
            f"({str(error).splitlines()[0]}); expected a folder written by save_pretrained or train.py, or a Hub id."
        ) from None


def load_pretrained_models(
    name_or_path: str,
) -> tuple[CLIPTokenizer, CLIPTextModel, MnistUNet2DConditionModel, MnistDDPMScheduler]:
    """The components of a saved `MnistDiffusionPipeline` (folder or Hub id), its schedule as a training scheduler."""
    pipe = load_pipeline_flag("--pretrained_model_name_or_path", name_or_path)
    if pipe.text_encoder is None or pipe.tokenizer is None:
        raise ValueError(
            f"--pretrained_model_name_or_path {name_or_path!r} has no text encoder and tokenizer; expected a "
            "text-conditioned pipeline (training builds captions)."
        )
    scheduler = MnistDDPMScheduler.from_config(pipe.scheduler.config)
    return pipe.tokenizer, pipe.text_encoder, pipe.unet, scheduler


def trained_named_params(
    args: argparse.Namespace, unet: torch.nn.Module, text_encoder: torch.nn.Module
) -> list[tuple[str, torch.nn.Parameter]]:
    """The UNet's parameters and, with `--train_text_encoder`, the text encoder's, named (Muon's split reads names)."""
    return list(unet.named_parameters(prefix="unet")) + (
        list(text_encoder.named_parameters(prefix="text_encoder")) if args.train_text_encoder else []
    )


def load_training_data(args: argparse.Namespace, resolution: int) -> ImageClassData:
    """`--dataset_name`'s `--train_split` (at most `--max_train_samples`), decoded once into uint8 tensors."""
    return prepare_training_data(
        load_split(args.dataset_name, args.dataset_config_name, args.train_split, args.cache_dir),
        image_column=args.image_column,
        label_column=args.label_column,
        caption_column=args.caption_column,
        resolution=resolution,
        max_train_samples=args.max_train_samples,
    )


def build_captioner(args: argparse.Namespace, data: ImageClassData, tokenizer: CLIPTokenizer) -> TrainingCaptioner:
    """Per-batch captions in `--caption_mode` (style words measured on the images once), with conditioning dropout."""
    style_words = None
    if args.caption_mode == "label+style" and data.captions is None:
        style_words = measure_style(data.images).words()
    return TrainingCaptioner(
        tokenizer,
        data.label_names,
        caption_mode=args.caption_mode,
        captions=data.captions,
        style_words=style_words,
        cond_dropout_prob=args.cond_dropout_prob,
        class_dropout_prob=args.class_dropout_prob,
    )


def build_pipeline(
    accelerator: Accelerator,
    unet: torch.nn.Module,
    text_encoder: torch.nn.Module,
    tokenizer: CLIPTokenizer,
    scheduler: MnistDDPMScheduler,
    id2label: dict[str, str],
) -> MnistDiffusionPipeline:
    """An eval-mode pipeline around the (unwrapped) models being trained."""
    unet = accelerator.unwrap_model(unet).eval()
    text_encoder = accelerator.unwrap_model(text_encoder).eval()
    return MnistDiffusionPipeline(
        unet=unet, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer, id2label=id2label
    )


def training_loss(
    batch: dict[str, torch.Tensor],
    args: argparse.Namespace,
    captioner: TrainingCaptioner,
    text_encoder: torch.nn.Module,
    unet: torch.nn.Module,
    noise_scheduler: MnistDDPMScheduler,
    accelerator: Accelerator,
) -> torch.Tensor:
    r"""
    The diffusion loss of one batch (Min-SNR weighted with `--snr_gamma`); `captioner` gives its captions with
    conditioning dropout (`--cond_dropout_prob`, `--class_dropout_prob`), tokenised.
    """
    pixel_values = batch["pixel_values"]
    bsz, device = pixel_values.shape[0], pixel_values.device
    conditioning = captioner(batch["labels"], batch["indices"])

    noise = torch.randn_like(pixel_values)
    timesteps = noise_scheduler.sample_training_timesteps(
        bsz, log_snr_mean=args.timestep_log_snr_mean, log_snr_std=args.timestep_log_snr_std, device=device
    )
    noisy = noise_scheduler.add_noise(pixel_values, noise, timesteps)
    target = noise_scheduler.training_target(pixel_values, noise, timesteps)
    with accelerator.autocast():
        encoder_hidden_states = text_encoder(conditioning.input_ids, attention_mask=conditioning.attention_mask)[0]
        model_pred = unet(
            noisy,
            timesteps,
            encoder_hidden_states=encoder_hidden_states,
            class_labels=conditioning.class_labels,
            encoder_attention_mask=conditioning.attention_mask,
        ).sample
    per_sample = F.mse_loss(model_pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    if args.snr_gamma:
        per_sample = per_sample * noise_scheduler.min_snr_loss_weights(timesteps, args.snr_gamma)
    return per_sample.mean()
