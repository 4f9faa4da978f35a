"""The accelerate training loop every script runs, with the start and finish of a run (trackers, final save, push)."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration
from diffusers import DiffusionPipeline
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from ..data import EpochShuffleSampler, ImageClassDataset
from ..hub import push_checkpoint, push_pipeline_to_hub, resolve_token
from .arguments import hub_repo_id
from .run_folder import (
    check_output_dir,
    resume_checkpoint,
    save_checkpoint,
    save_final_pipeline,
    tracker_config,
    write_training_args,
)

logger = get_logger(__name__)


def check_run(args: argparse.Namespace) -> str | None:
    r"""
    Everything a diffusion training run checks before it writes anything: `--output_dir` is new, empty or ours, the
    checkpoint that `--resume_from_checkpoint` names reads back (returned; `None` for a fresh start), and with
    `--push_to_hub` a Hub token exists (no token: fail now, not after training).
    """
    check_output_dir(args.output_dir)
    resume_path = resume_checkpoint(args.output_dir, args.resume_from_checkpoint)
    if args.push_to_hub:
        resolve_token(None)
    return resume_path


def build_accelerator(args: argparse.Namespace) -> Accelerator:
    """The `Accelerator` of a training script: accumulation, mixed precision, trackers logging in the output dir."""
    return Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, args.logging_dir)
        ),
    )


def build_dataloader(
    dataset: ImageClassDataset, args: argparse.Namespace, num_workers: int = 0
) -> torch.utils.data.DataLoader:
    """Batches of `--train_batch_size`, in an order reshuffled each epoch from `--seed` (resumable mid-epoch)."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=args.train_batch_size,
        sampler=EpochShuffleSampler(len(dataset), seed=args.seed),
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(args.seed),
    )


def updates_per_epoch_of(args: argparse.Namespace, num_samples: int, accelerator: Accelerator) -> int:
    """Optimizer updates per epoch of `num_samples` (over all processes, with gradient accumulation)."""
    batches = math.ceil(num_samples / (args.train_batch_size * accelerator.num_processes))
    return math.ceil(batches / args.gradient_accumulation_steps)


def start_run(accelerator: Accelerator, args: argparse.Namespace, project_name: str) -> None:
    """Create `--output_dir`, record the arguments in it (the marker that it is ours) and start the trackers."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        write_training_args(args)
        accelerator.init_trackers(project_name, config=tracker_config(args))


def finish_run(
    accelerator: Accelerator, args: argparse.Namespace, build_pipeline: Callable[[], DiffusionPipeline]
) -> DiffusionPipeline | None:
    r"""
    End a run: the main process saves the pipeline that `build_pipeline` returns in `--output_dir` (complete first,
    then swapped in: [`~mnist_diffusion.training.run_folder.save_final_pipeline`]), records the arguments again and,
    with `--push_to_hub`, pushes the folder; returns the pipeline there (`None` on the other processes).
    """
    accelerator.wait_for_everyone()
    pipeline = None
    if accelerator.is_main_process:
        pipeline = build_pipeline()
        save_final_pipeline(pipeline, args.output_dir)
        write_training_args(args)
        logger.info(f"Saved the pipeline to {args.output_dir}")
        if args.push_to_hub:
            push_pipeline_to_hub(args.output_dir, hub_repo_id(args))
    accelerator.end_training()
    return pipeline


@contextlib.contextmanager
def ema_weights(ema: EMAModel | None, params: list[torch.nn.Parameter]) -> Iterator[None]:
    """Within the block, `params` hold the EMA weights (when `ema` is given); the training weights come back after."""
    if ema is None:
        yield
        return
    ema.store(params)
    ema.copy_to(params)
    try:
        yield
    finally:
        ema.restore(params)


def run_training_loop(
    accelerator: Accelerator,
    trained: list[torch.nn.Module],
    optimizer: torch.optim.Optimizer,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler,
    epoch_batches: Callable[[int], Iterable[Any]],
    compute_loss: Callable[[Any], torch.Tensor],
    max_train_steps: int,
    updates_per_epoch: int,
    images_per_update: int,
    global_step: int = 0,
    params: list[torch.nn.Parameter] | None = None,
    max_grad_norm: float | None = None,
    after_update: Callable[[], None] | None = None,
    checkpointing_steps: int = 0,
    on_checkpoint_step: Callable[[int], None] | None = None,
    validation_steps: int = 0,
    validate: Callable[[int], None] | None = None,
    end_of_epoch: Callable[[int], None] | None = None,
    description: str = "Steps",
) -> int:
    r"""
    The optimisation loop of every training script, from `global_step` to `max_train_steps`; returns the last step.

    Each epoch's batches come from `epoch_batches(epoch)`, each batch's loss from `compute_loss`. Gradients of
    `params` are clipped to `max_grad_norm` (when given) before each optimizer update; after every update
    `after_update` runs (an EMA step), then the progress bar and trackers get the loss, learning rate and images/s,
    `on_checkpoint_step(step)` runs every `checkpointing_steps`, and the main process calls `validate(step)` every
    `validation_steps` and at the last step; `end_of_epoch(epoch)` runs after each epoch. The trained models go back
    to train mode after each hook that may switch them to eval mode.

    Example (a classifier, one epoch of random batches):

    ```py
    >>> import torch
    >>> from accelerate import Accelerator
    >>> from mnist_diffusion.training.loop import run_training_loop

    >>> model = torch.nn.Linear(4, 2)
    >>> optimizer = torch.optim.AdamW(model.parameters())
    >>> schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    >>> batches = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(3)]
    >>> loss = lambda batch: torch.nn.functional.cross_entropy(model(batch[0]), batch[1])
    >>> run_training_loop(Accelerator(), [model], optimizer, schedule, lambda epoch: batches, loss, 3, 3, 8)
    3
    ```
    """
    first_epoch = global_step // updates_per_epoch
    num_epochs = math.ceil(max_train_steps / updates_per_epoch)
    progress_bar = tqdm(
        range(max_train_steps), initial=global_step, desc=description, disable=not accelerator.is_local_main_process
    )
    start_time, start_step = time.perf_counter(), global_step
    for model in trained:
        model.train()
    for epoch in range(first_epoch, num_epochs):
        if global_step >= max_train_steps:
            break
        for batch in epoch_batches(epoch):
            with accelerator.accumulate(*trained):
                loss = compute_loss(batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients and max_grad_norm is not None:
                    accelerator.clip_grad_norm_(params, max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)

            if not accelerator.sync_gradients:
                continue
            if after_update is not None:
                after_update()
            global_step += 1
            progress_bar.update(1)
            images_per_second = (global_step - start_step) * images_per_update / (time.perf_counter() - start_time)
            logs = {"loss": loss.detach().item(), "lr": lr_scheduler.get_last_lr()[0], "img/s": images_per_second}
            progress_bar.set_postfix(
                loss=f"{logs['loss']:.4g}", lr=f"{logs['lr']:.2e}", img_s=f"{images_per_second:.0f}", epoch=epoch
            )
            accelerator.log({f"train/{k}": v for k, v in logs.items()}, step=global_step)

            if on_checkpoint_step is not None and checkpointing_steps and global_step % checkpointing_steps == 0:
                on_checkpoint_step(global_step)
            is_last = global_step >= max_train_steps
            validation_due = validation_steps and (global_step % validation_steps == 0 or is_last)
            if validate is not None and validation_due and accelerator.is_main_process:
                validate(global_step)
                for model in trained:
                    model.train()
            if is_last:
                break
        if end_of_epoch is not None:
            end_of_epoch(epoch)
            for model in trained:
                model.train()
    progress_bar.close()
    return global_step


def run_script_loop(
    accelerator: Accelerator,
    args: argparse.Namespace,
    train_dataloader: torch.utils.data.DataLoader,
    trained: list[torch.nn.Module],
    params: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler,
    compute_loss: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    global_step: int,
    max_train_steps: int,
    updates_per_epoch: int,
    after_update: Callable[[], None] | None = None,
    validate: Callable[[int], None] | None = None,
) -> int:
    r"""
    [`run_training_loop`] as the diffusion scripts run it, from their flags: batches of the prepared
    `train_dataloader` (a resumed run skips the batches its epoch already used), gradients clipped to
    `--max_grad_norm`, a checkpoint every `--checkpointing_steps` (kept to `--checkpoints_total_limit`, and with
    `--push_checkpoints` pushed to the Hub) and `validate` every `--validation_steps`.
    """
    first_epoch = global_step // updates_per_epoch
    batches_to_skip = (global_step % updates_per_epoch) * args.gradient_accumulation_steps

    def epoch_batches(epoch: int) -> Iterable[dict[str, torch.Tensor]]:
        dataloader = train_dataloader
        if epoch == first_epoch and batches_to_skip:
            dataloader = accelerator.skip_first_batches(train_dataloader, batches_to_skip)
        dataloader.set_epoch(epoch)
        return dataloader

    def on_checkpoint_step(step: int) -> None:
        checkpoint_dir = save_checkpoint(accelerator, args.output_dir, step, args.checkpoints_total_limit)
        if accelerator.is_main_process and args.push_checkpoints:
            push_checkpoint(checkpoint_dir, hub_repo_id(args))

    return run_training_loop(
        accelerator,
        trained,
        optimizer,
        lr_scheduler,
        epoch_batches,
        compute_loss,
        max_train_steps=max_train_steps,
        updates_per_epoch=updates_per_epoch,
        images_per_update=args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps,
        global_step=global_step,
        params=params,
        max_grad_norm=args.max_grad_norm,
        after_update=after_update,
        checkpointing_steps=args.checkpointing_steps,
        on_checkpoint_step=on_checkpoint_step,
        validation_steps=args.validation_steps,
        validate=validate,
    )
