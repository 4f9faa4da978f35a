"""Train a text- and class-conditioned MnistDiffusionPipeline: `accelerate launch training/train.py ...`."""

from __future__ import annotations

import argparse
import logging
import math
import sys

from accelerate.logging import get_logger
from accelerate.utils import set_seed
from diffusers.training_utils import EMAModel

from mnist_diffusion import MnistDiffusionPipeline
from mnist_diffusion.data import ImageClassDataset
from mnist_diffusion.training.arguments import run_script
from mnist_diffusion.training.loop import (
    build_accelerator,
    build_dataloader,
    check_run,
    ema_weights,
    finish_run,
    run_script_loop,
    start_run,
    updates_per_epoch_of,
)
from mnist_diffusion.training.optimization import optimizer_from_args
from mnist_diffusion.training.run_folder import load_checkpoint
from mnist_diffusion.training.text_to_image import (
    build_captioner,
    build_models,
    build_pipeline,
    load_training_data,
    parse_args,
    resolve_text_encoder,
    trained_named_params,
    training_loss,
)
from mnist_diffusion.training.validation import build_evaluator, log_evaluation, log_validation

logger = get_logger(__name__)


def main(args: argparse.Namespace) -> MnistDiffusionPipeline | None:
    r"""
    Train and save the pipeline in `args.output_dir`; returns it on the main process.

    Example:

    ```py
    >>> from mnist_diffusion.training.text_to_image import parse_args

    >>> main(parse_args(["--dataset_name", "ylecun/mnist", "--output_dir", "out", "--max_train_steps", "100"]))
    ```
    """
    # 1. Check the output folder, the checkpoint to resume from and the Hub token before anything is written.
    resume_path = check_run(args)
    accelerator = build_accelerator(args)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    logger.info(accelerator.state, main_process_only=False)
    set_seed(args.seed)  # the same initial weights in every process

    # 2. Data: decoded once into uint8 tensors; captions are built per batch from labels and measured style.
    data = load_training_data(args, args.resolution)
    resolve_text_encoder(args, data.label_names)
    evaluator = build_evaluator(args, data.label_names, accelerator.device) if args.eval_classifier else None
    dataset = ImageClassDataset(data)
    train_dataloader = build_dataloader(dataset, args, num_workers=args.dataloader_num_workers)

    # 3. Models, captions, EMA, optimizer and learning-rate schedule.
    tokenizer, text_encoder, unet, noise_scheduler = build_models(args, num_classes=len(data.label_names))
    captioner = build_captioner(args, data, tokenizer)
    set_seed(args.seed, device_specific=True)  # different noise, timesteps and dropout in each process
    named_params = trained_named_params(args, unet, text_encoder)
    params = [param for _, param in named_params]
    ema = (
        EMAModel(params, decay=args.ema_max_decay, use_ema_warmup=True, power=args.ema_power) if args.use_ema else None
    )
    updates_per_epoch = updates_per_epoch_of(args, len(dataset), accelerator)
    max_train_steps = args.max_train_steps or args.num_epochs * updates_per_epoch
    num_epochs = math.ceil(max_train_steps / updates_per_epoch)
    optimizer, lr_scheduler = optimizer_from_args(args, named_params, max_train_steps, accelerator.num_processes)

    # 4. Prepare for the processes; a frozen text encoder only moves to the device.
    if args.train_text_encoder:
        unet, text_encoder, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(
            unet, text_encoder, optimizer, train_dataloader, lr_scheduler
        )
    else:
        unet, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(
            unet, optimizer, train_dataloader, lr_scheduler
        )
        text_encoder.to(accelerator.device)
    trained = [unet] + ([text_encoder] if args.train_text_encoder else [])
    if ema is not None:
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)

    # 5. Resume (before training_args.json is rewritten: a failed resume leaves the run as it was), start the run.
    global_step = load_checkpoint(accelerator, resume_path)
    start_run(accelerator, args, "mnist-diffusion")
    total_batch_size = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info("***** Running training *****")
    logger.info(f"  Num examples = {len(dataset)}, classes = {data.label_names}")
    logger.info(f"  Num epochs = {num_epochs}, total optimization steps = {max_train_steps}")
    logger.info(f"  Total batch size (parallel, distributed & accumulation) = {total_batch_size}")

    # 6. Train: an EMA step after each update; validation grids (and scores) with the EMA weights.
    def after_update() -> None:
        if ema is not None:
            ema.step(params)

    def validate(step: int) -> None:
        with ema_weights(ema, params):
            pipe = build_pipeline(accelerator, unet, text_encoder, tokenizer, noise_scheduler, data.id2label)
            log_validation(pipe, args, accelerator, step)
            if evaluator is not None:
                log_evaluation(evaluator.evaluate(pipe), args, accelerator, step)

    run_script_loop(
        accelerator,
        args,
        train_dataloader,
        trained,
        params,
        optimizer,
        lr_scheduler,
        compute_loss=lambda batch: training_loss(
            batch, args, captioner, text_encoder, unet, noise_scheduler, accelerator
        ),
        global_step=global_step,
        max_train_steps=max_train_steps,
        updates_per_epoch=updates_per_epoch,
        after_update=after_update,
        validate=validate,
    )

    # 7. Save the pipeline with the EMA weights (swapped in complete), record the arguments, push.
    def final_pipeline() -> MnistDiffusionPipeline:
        if ema is not None:
            ema.copy_to(params)
        return build_pipeline(accelerator, unet, text_encoder, tokenizer, noise_scheduler, data.id2label)

    return finish_run(accelerator, args, final_pipeline)


if __name__ == "__main__":
    sys.exit(run_script(parse_args, main, script="train.py"))
