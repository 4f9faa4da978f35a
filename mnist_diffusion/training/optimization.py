"""The optimizer and learning-rate schedule of every training script: AdamW or Muon, with diffusers' schedules."""

from __future__ import annotations

import argparse

import torch
from diffusers.optimization import get_scheduler

from .muon_optimizer import MuonAdamW, split_muon_params

OPTIMIZERS = ("adamw", "muon")


def build_optimizer(
    named_params: list[tuple[str, torch.nn.Parameter]],
    learning_rate: float,
    num_training_steps: int,
    num_warmup_steps: int,
    optimizer: str = "adamw",
    lr_scheduler: str = "cosine",
    weight_decay: float = 1e-2,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    r"""
    An optimizer over `named_params` and its learning-rate schedule (any name of diffusers' `get_scheduler`).

    `optimizer="muon"` gives Muon to the hidden layers' weight matrices and conv kernels and AdamW to the rest, at the
    same learning rate and weight decay (see [`~mnist_diffusion.training.muon_optimizer.MuonAdamW`]); `"adamw"`
    gives AdamW to all.

    Example:

    ```py
    >>> import torch
    >>> from mnist_diffusion.training.optimization import build_optimizer

    >>> model = torch.nn.Linear(4, 2)
    >>> optimizer, schedule = build_optimizer(
    ...     list(model.named_parameters()), learning_rate=1e-3, num_training_steps=100, num_warmup_steps=10
    ... )
    ```
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer is {optimizer!r}; expected one of {list(OPTIMIZERS)}.")
    adam = dict(betas=betas, weight_decay=weight_decay, eps=eps)
    if optimizer == "muon":
        built = MuonAdamW(split_muon_params(named_params), lr=learning_rate, **adam)
    else:
        built = torch.optim.AdamW([param for _, param in named_params], lr=learning_rate, **adam)
    schedule = get_scheduler(
        lr_scheduler, optimizer=built, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps
    )
    return built, schedule


def optimizer_from_args(
    args: argparse.Namespace,
    named_params: list[tuple[str, torch.nn.Parameter]],
    max_train_steps: int,
    num_processes: int = 1,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    r"""
    [`build_optimizer`] from the flags of [`~mnist_diffusion.training.arguments.add_optimisation_arguments`]; the
    schedule is stepped once per process by accelerate's prepared scheduler, so its steps scale with them.
    """
    return build_optimizer(
        named_params,
        learning_rate=args.learning_rate,
        num_training_steps=max_train_steps * num_processes,
        num_warmup_steps=args.lr_warmup_steps * num_processes,
        optimizer=args.optimizer,
        lr_scheduler=args.lr_scheduler,
        weight_decay=args.adam_weight_decay,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
    )
