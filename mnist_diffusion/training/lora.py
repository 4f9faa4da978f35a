"""LoRA fine-tuning of a class-conditioned pipeline on a few images per class: the recipe, the data, the loop."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

from ..image_input import load_image_file, prepare_image
from ..loading import scheduler_from_config
from ..lora_hub import LORA_WEIGHTS_FILE
from ..pipelines import MnistDiffusionPipeline
from ..schedulers import MnistDDPMScheduler
from .classifier import random_affine
from .loop import run_training_loop
from .optimization import build_optimizer
from .run_folder import load_checkpoint

#: Prior images are generated with this many DPM-Solver++ steps and this guidance scale.
PRIOR_STEPS, PRIOR_GUIDANCE_SCALE = 20, 3.0
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclasses.dataclass
class LoraRecipe:
    r"""
    The settings of a LoRA fine-tuning run. The defaults are the measured best for about five images per class on a
    laptop CPU (docs/benchmarks.md, "LoRA adapters"); `training/train_lora.py` takes its flag defaults from here.

    Example:

    ```py
    >>> from mnist_diffusion.training.lora import LoraRecipe

    >>> recipe = LoraRecipe(rank=4, max_train_steps=100)
    ```
    """

    rank: int = 2
    lora_alpha: float | None = None
    target_modules: tuple[str, ...] = ("to_q", "to_kv", "to_out", "conv1", "conv2")
    module_scales: dict[str, float] = dataclasses.field(default_factory=dict)
    instance_prompt: str | None = None
    num_class_images: int = 0
    num_other_class_images: int = 10
    prior_loss_weight: float = 0.3
    null_class_share: float = 0.0
    augment: float = 0.0
    max_train_steps: int = 1200
    train_batch_size: int = 8
    learning_rate: float = 1e-2
    optimizer: str = "adamw"
    lr_scheduler: str = "cosine"
    lr_warmup_steps: int = 0
    adam_weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float | None = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        self.target_modules = tuple(self.target_modules)
        if self.rank < 1:
            raise ValueError(f"rank is {self.rank}; expected a positive integer.")
        if self.lora_alpha is not None and self.lora_alpha <= 0:
            raise ValueError(f"lora_alpha is {self.lora_alpha}; expected a value > 0.")
        if not self.target_modules or not all(self.target_modules):
            raise ValueError(f"target_modules is {self.target_modules!r}; expected module names.")
        self.module_scales = dict(self.module_scales)
        for name, scale in self.module_scales.items():
            if not scale > 0:
                raise ValueError(f"module_scales gives {name!r} the scale {scale}; expected a scale > 0.")
        for name in ("num_class_images", "num_other_class_images", "prior_loss_weight", "augment"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} is {getattr(self, name)}; expected 0 or more.")
        if not 0 <= self.null_class_share <= 1:
            raise ValueError(f"null_class_share is {self.null_class_share}; expected a share in [0, 1].")
        for name in ("max_train_steps", "train_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} is {getattr(self, name)}; expected a positive integer.")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate is {self.learning_rate}; expected a value > 0.")

    def lora_config(self) -> LoraConfig:
        r"""
        peft's `LoraConfig` of the adapter (B starts at zero, so the adapted model starts as the base). The modules
        of `module_scales` that are among `target_modules` get `lora_alpha` times their scale (peft's
        `alpha_pattern`, saved with the weights); the others are not adapted, so their scales do not apply.
        """
        alpha = self.lora_alpha or self.rank
        scales = {name: scale for name, scale in self.module_scales.items() if name in self.target_modules}
        return LoraConfig(
            r=self.rank,
            lora_alpha=alpha,
            alpha_pattern={name: alpha * scale for name, scale in scales.items()},
            init_lora_weights="gaussian",
            target_modules=list(self.target_modules),
        )


def read_class_folder(
    folder: str | Path, pipe: MnistDiffusionPipeline, argument: str = "--train_data_dir"
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""
    The images of `folder/<label>/*` as `(n, 1, size, size)` in [-1, 1] (white on black) and their class ids; a
    `ValueError` (naming `argument`) for an empty folder, a missing or unknown class sub-folder, a file that is not an
    image.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{argument} {str(folder)!r} is not a folder; expected DIR/<label>/*.png.")
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    if not entries:
        raise ValueError(f"{argument} {str(folder)!r} is empty; expected one sub-folder per class (DIR/0/*.png).")
    names = pipe.label_names
    class_dirs = [p for p in entries if p.is_dir()]
    if not class_dirs:
        raise ValueError(
            f"{argument} {str(folder)!r} has no class sub-folders; expected DIR/<label>/*.png with labels {names}."
        )
    images, labels = [], []
    for class_dir in class_dirs:
        try:
            (label,) = pipe.resolve_class_labels([class_dir.name])
        except ValueError:
            raise ValueError(
                f"{argument} sub-folder {class_dir.name!r} is not a class of the base model; expected one of "
                f"{names or list(range(pipe.num_classes))}."
            ) from None
        files = sorted(p for p in class_dir.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise ValueError(f"{argument} sub-folder {str(class_dir)!r} holds no images.")
        for path in files:
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise ValueError(f"{str(path)!r} is not an image file; expected one of {list(IMAGE_SUFFIXES)}.")
            image = load_image_file(path, argument=f"{argument} file")
            images.append(prepare_image(image, pipe.sample_size, pipe.sample_size, argument=str(path)))
            labels.append(label)
    return torch.cat(images), torch.tensor(labels)


@torch.no_grad()
def generate_prior_images(
    pipe: MnistDiffusionPipeline, labels: list[int], num_per_class: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`num_per_class` images of each of `labels` drawn by the base model, in [-1, 1], and their labels."""
    sampler = MnistDiffusionPipeline.from_pipe(pipe, scheduler=scheduler_from_config("dpm", pipe.scheduler.config))
    generator = torch.Generator().manual_seed(seed)
    images = sampler(
        class_labels=labels,
        num_images_per_prompt=num_per_class,
        num_inference_steps=PRIOR_STEPS,
        guidance_scale=PRIOR_GUIDANCE_SCALE,
        generator=generator,
        output_type="latent",
    ).images
    return images.clamp(-1, 1), torch.tensor(labels).repeat_interleave(num_per_class)


def prior_image_plan(num_classes: int, labels: torch.Tensor, recipe: LoraRecipe) -> list[tuple[list[int], int]]:
    r"""
    What prior preservation will draw for training images of `labels`: `(classes, images per class)` pairs, the
    `recipe.num_class_images` of each class in `labels` and the `recipe.num_other_class_images` of each of the
    `num_classes` classes not in them; an empty list when nothing will be drawn.
    """
    seen = sorted(set(labels.tolist()))
    others = [label for label in range(num_classes) if label not in seen]
    plan = ((seen, recipe.num_class_images), (others, recipe.num_other_class_images))
    return [(classes, count) for classes, count in plan if classes and count]


def prior_preservation_images(
    pipe: MnistDiffusionPipeline, labels: torch.Tensor, recipe: LoraRecipe
) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
    r"""
    The base model's own images that [`train_lora`] trains on beside the user's, as [`prior_image_plan`] lists them,
    with their labels; `(None, None)` when there are none.
    """
    priors = [
        generate_prior_images(pipe, classes, count, recipe.seed)
        for classes, count in prior_image_plan(pipe.num_classes, labels, recipe)
    ]
    if not priors:
        return None, None
    images, prior_labels = zip(*priors, strict=True)
    return torch.cat(images), torch.cat(prior_labels)


def with_null_class_copies(
    images: torch.Tensor, labels: torch.Tensor, share: float, null_label: int
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""
    `images` and `labels` followed by copies of `share` of the images (spread evenly over them) labelled
    `null_label`, so that the null class, the branch that classifier-free guidance subtracts, learns the style too
    (docs/benchmarks.md, "LoRA adapters", fifth round).
    """
    count = round(share * len(images))
    picks = torch.linspace(0, len(images) - 1, count).round().long()
    return torch.cat([images, images[picks]]), torch.cat([labels, torch.full((count,), null_label)])


def check_training_images(pipe: MnistDiffusionPipeline, images: torch.Tensor, labels: torch.Tensor) -> None:
    """A `ValueError` unless `images` are two or more `(n, channels, size, size)` images, each of a `pipe` class."""
    if images.ndim != 4 or len(images) != len(labels):
        raise ValueError(
            f"images has shape {tuple(images.shape)} for {len(labels)} labels; expected (n, channels, size, size) "
            "with one label each."
        )
    if len(images) < 2:
        raise ValueError(f"The training data has {len(images)} image(s); expected at least 2 (a few per class).")
    if not pipe.num_classes:
        raise ValueError("The base pipeline has no classes; LoRA training needs a class-conditioned model.")
    if int(labels.min()) < 0 or int(labels.max()) >= pipe.num_classes:
        raise ValueError(f"labels hold ids outside 0..{pipe.num_classes - 1}, the base model's classes.")


def train_lora(
    pipe: MnistDiffusionPipeline,
    images: torch.Tensor,
    labels: torch.Tensor,
    recipe: LoraRecipe | None = None,
    *,
    accelerator: Accelerator | None = None,
    resume_path: str | None = None,
    checkpointing_steps: int = 0,
    on_checkpoint_step: Callable[[int], None] | None = None,
    validation_steps: int = 0,
    validate: Callable[[int], None] | None = None,
    callback_on_step_end: Callable[[int, int], None] | None = None,
) -> MnistDiffusionPipeline:
    r"""
    Teach `pipe` the style of `images` (`(n, 1, size, size)` in [-1, 1]) with a LoRA adapter on its UNet, trained
    with `recipe`; the base weights stay frozen and unchanged. Returns `pipe` with the trained adapter active
    (`"default"`): `pipe(class_labels=d)` then draws digit `d` in the style, and [`save_lora_adapter`] writes it.

    Prior preservation (as in diffusers' DreamBooth scripts): the base model first draws `recipe.num_class_images`
    images of each class the training images name and `recipe.num_other_class_images` of each class they do not
    name, and every batch pairs each training image with one of them, its loss weighted by
    `recipe.prior_loss_weight`. The second kind keeps the digits you did not draw from turning into those you did. With
    `recipe.instance_prompt` and a text encoder, the training images are conditioned on that prompt, the prior images
    on the empty one. `callback_on_step_end(step, max_train_steps)` runs after each optimizer update (an exception
    raised there stops the run). The other keywords serve `training/train_lora.py`: its `Accelerator`, the checkpoint
    to resume, and its checkpoint and validation hooks.

    Example:

    ```py
    >>> from mnist_diffusion import MnistDiffusionPipeline
    >>> from mnist_diffusion.training.lora import LoraRecipe, read_class_folder, save_lora_adapter, train_lora

    >>> pipe = MnistDiffusionPipeline.from_pretrained("outputs/mnist-diffusion")  # doctest: +SKIP
    >>> images, labels = read_class_folder("my-digits", pipe)  # my-digits/0/*.png ... my-digits/9/*.png
    >>> pipe = train_lora(pipe, images, labels, LoraRecipe(max_train_steps=200))
    >>> save_lora_adapter(pipe, "my-handwriting")
    ```
    """
    recipe = recipe or LoraRecipe()
    check_training_images(pipe, images, labels)
    accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    device = accelerator.device
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    for model in (pipe.unet, pipe.text_encoder):
        if model is not None:
            model.requires_grad_(False)

    # 1. The base model's own samples (prior preservation), before the adapter exists
    prior_images, prior_labels = prior_preservation_images(pipe, labels, recipe)
    images, labels = with_null_class_copies(images, labels, recipe.null_class_share, pipe.null_class_label)

    # 2. The conditioning: the instance prompt for the training images, the empty prompt for the prior images
    def embed(prompt: str) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
        if pipe.text_encoder is None:
            return None, None
        embeds, mask, _, _ = pipe.encode_prompt([prompt], device, 1, False)
        return embeds, mask

    instance_embeds, instance_mask = embed(recipe.instance_prompt or "")
    empty_embeds, empty_mask = embed("")

    # 3. The adapter, its optimizer, the resumed state
    unet = pipe.unet
    unet.add_adapter(recipe.lora_config())
    named_params = [(name, p) for name, p in unet.named_parameters() if p.requires_grad]
    params = [p for _, p in named_params]
    optimizer, lr_scheduler = build_optimizer(
        named_params,
        learning_rate=recipe.learning_rate,
        num_training_steps=recipe.max_train_steps * accelerator.num_processes,
        num_warmup_steps=recipe.lr_warmup_steps * accelerator.num_processes,
        optimizer=recipe.optimizer,
        lr_scheduler=recipe.lr_scheduler,
        weight_decay=recipe.adam_weight_decay,
        betas=(recipe.adam_beta1, recipe.adam_beta2),
        eps=recipe.adam_epsilon,
    )
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    global_step = load_checkpoint(accelerator, resume_path)
    noise_scheduler = MnistDDPMScheduler.from_config(pipe.scheduler.config)

    # 4. Batches: a permutation of the training images per epoch, each image with one prior image
    batch_size = min(recipe.train_batch_size, len(images))
    updates_per_epoch = math.ceil(len(images) / batch_size)

    def epoch_batches(epoch: int) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        generator = torch.Generator().manual_seed(recipe.seed * 100_003 + epoch)
        order = torch.randperm(len(images), generator=generator)
        batches = []
        for indices in order.split(batch_size):
            prior = None
            if prior_images is not None:
                prior = torch.randint(0, len(prior_images), (len(indices),), generator=generator)
            batches.append((indices, prior))
        done = global_step - epoch * updates_per_epoch if epoch == global_step // updates_per_epoch else 0
        return batches[max(done, 0) :]

    augment_generator = torch.Generator().manual_seed(recipe.seed)

    def compute_loss(batch: tuple[torch.Tensor, torch.Tensor | None]) -> torch.Tensor:
        indices, prior = batch
        pixels, classes = images[indices], labels[indices]
        if prior is not None:
            pixels, classes = torch.cat([pixels, prior_images[prior]]), torch.cat([classes, prior_labels[prior]])
        pixels = random_affine(pixels, recipe.augment, augment_generator, background=-1.0).to(device)
        conditioning = {"class_labels": classes.to(device)}
        if instance_embeds is not None:  # the instance prompt for the training images; the empty one for the rest
            instance = torch.arange(len(pixels)) < len(indices)
            instance &= classes != pipe.null_class_label
            conditioning["encoder_hidden_states"] = torch.where(
                instance[:, None, None].to(device), instance_embeds, empty_embeds
            )
            conditioning["encoder_attention_mask"] = torch.where(
                instance[:, None].to(device), instance_mask, empty_mask
            )
        noise = torch.randn_like(pixels)
        timesteps = noise_scheduler.sample_training_timesteps(len(pixels), device=device)
        noisy = noise_scheduler.add_noise(pixels, noise, timesteps)
        target = noise_scheduler.training_target(pixels, noise, timesteps)
        with accelerator.autocast():
            prediction = unet(noisy, timesteps, **conditioning).sample
        per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        loss = per_sample[: len(indices)].mean()
        if prior is not None:
            loss = loss + recipe.prior_loss_weight * per_sample[len(indices) :].mean()
        return loss

    step = global_step

    def after_update() -> None:
        nonlocal step
        step += 1
        if callback_on_step_end is not None:
            callback_on_step_end(step, recipe.max_train_steps)

    # 5. Training
    run_training_loop(
        accelerator,
        [unet],
        optimizer,
        lr_scheduler,
        epoch_batches,
        compute_loss,
        max_train_steps=recipe.max_train_steps,
        updates_per_epoch=updates_per_epoch,
        images_per_update=batch_size * (2 if prior_images is not None else 1),
        global_step=global_step,
        params=params,
        max_grad_norm=recipe.max_grad_norm,
        after_update=after_update,
        checkpointing_steps=checkpointing_steps,
        on_checkpoint_step=on_checkpoint_step,
        validation_steps=validation_steps,
        validate=validate,
        description="LoRA steps",
    )
    pipe.unet = accelerator.unwrap_model(unet).eval()
    return pipe


def save_lora_adapter(pipe: MnistDiffusionPipeline, output_dir: str | Path, adapter_name: str = "default") -> Path:
    r"""
    Write the adapter `adapter_name` of `pipe`'s UNet to `output_dir` in diffusers' layout
    (`pytorch_lora_weights.safetensors` with its `LoraConfig` as metadata), which `load_lora_weights` reads;
    returns the weights file.
    """
    unet = pipe.unet
    MnistDiffusionPipeline.save_lora_weights(
        str(output_dir),
        unet_lora_layers=get_peft_model_state_dict(unet, adapter_name=adapter_name),
        unet_lora_adapter_metadata=unet.peft_config[adapter_name].to_dict(),
    )
    return Path(output_dir) / LORA_WEIGHTS_FILE
