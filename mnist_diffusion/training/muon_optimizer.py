"""Muon (momentum orthogonalised by Newton-Schulz) for weight matrices and conv kernels, with AdamW for the rest."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

import torch
from torch.optim.adamw import adamw

# Quintic Newton-Schulz coefficients tuned for a fast, approximate orthogonalisation (Jordan et al., 2024).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(updates: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """
    Approximately replace each matrix of `updates` `(batch, rows, cols)` by the nearest semi-orthogonal one (its
    singular values pushed towards 1) with `steps` quintic Newton-Schulz iterations.

    Example:

    ```py
    >>> q = orthogonalize(torch.randn(2, 8, 32))
    >>> torch.linalg.svdvals(q).min() > 0.5
    tensor(True)
    ```
    """
    a, b, c = NS_COEFFICIENTS
    x = updates / (updates.norm(dim=(1, 2), keepdim=True) + eps)
    tall = x.shape[1] > x.shape[2]
    if tall:
        x = x.transpose(1, 2)
    for _ in range(steps):
        gram = x @ x.transpose(1, 2)
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.transpose(1, 2) if tall else x


class MuonAdamW(torch.optim.Optimizer):
    r"""
    Muon (Jordan et al., 2024) for the parameter groups with `use_muon=True`, AdamW for the others, in one optimizer
    (one lr schedule, one state dict for checkpoints).

    A Muon parameter's update is its Nesterov momentum, flattened to `(out_features, -1)` (conv kernels included),
    orthogonalised by [`orthogonalize`] and scaled by `0.2 * sqrt(max(rows, cols))` so that its RMS matches a typical
    AdamW update (Liu et al., 2025): both kinds of group then share `lr` and `weight_decay` (decoupled, as AdamW).

    Args:
        params: Parameter groups, each a dict with `params` and `use_muon`.
        lr (`float`): Learning rate of both kinds of group.
        betas (`tuple[float, float]`): AdamW's moment decays.
        eps (`float`): AdamW's denominator term.
        weight_decay (`float`): Decoupled weight decay of both kinds of group.
        momentum (`float`, defaults to 0.95): Muon's momentum.
        ns_steps (`int`, defaults to 5): Newton-Schulz iterations.

    Example:

    ```py
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.Flatten(), torch.nn.Linear(72, 2))
    >>> optimizer = MuonAdamW(split_muon_params(model.named_parameters()), lr=2e-3)
    >>> model(torch.randn(4, 1, 5, 5)).square().mean().backward()
    >>> optimizer.step()
    ```
    """

    def __init__(
        self,
        params: Iterable[dict],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.95,
        ns_steps: int = 5,
    ) -> None:
        if lr <= 0 or not 0 <= momentum < 1 or ns_steps < 1:
            raise ValueError(
                f"Got lr {lr}, momentum {momentum}, ns_steps {ns_steps}; expected lr > 0, momentum in [0, 1) and "
                "ns_steps >= 1."
            )
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, momentum=momentum, ns_steps=ns_steps)
        super().__init__(params, defaults)
        for group in self.param_groups:
            if "use_muon" not in group:
                raise ValueError(f"A parameter group without 'use_muon': {sorted(group)}; expected True or False.")
            if group["use_muon"] and any(p.ndim < 2 for p in group["params"]):
                raise ValueError(
                    "A Muon group holds a parameter with fewer than 2 dimensions; expected matrices or kernels."
                )

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                (self._muon_step if group["use_muon"] else self._adamw_step)(params, group)
        return loss

    def _muon_step(self, params: list[torch.Tensor], group: dict) -> None:
        grads = [p.grad for p in params]
        buffers = [self.state[p].setdefault("momentum_buffer", torch.zeros_like(p)) for p in params]
        torch._foreach_mul_(buffers, group["momentum"])
        torch._foreach_add_(buffers, grads)
        updates = torch._foreach_add(grads, buffers, alpha=group["momentum"])  # Nesterov
        torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])
        by_shape = defaultdict(list)
        for p, update in zip(params, updates, strict=True):
            by_shape[(p.shape[0], p[0].numel())].append((p, update.reshape(p.shape[0], -1)))
        for (rows, cols), items in by_shape.items():
            orthogonal = orthogonalize(torch.stack([update for _, update in items]), group["ns_steps"])
            scale = 0.2 * math.sqrt(max(rows, cols))
            for (p, _), update in zip(items, orthogonal, strict=True):
                p.add_(update.view_as(p), alpha=-group["lr"] * scale)

    def _adamw_step(self, params: list[torch.Tensor], group: dict) -> None:
        for p in params:
            state = self.state[p]
            if "step" not in state:
                state["step"] = torch.tensor(0.0)
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
        states = [self.state[p] for p in params]
        beta1, beta2 = group["betas"]
        adamw(
            params,
            [p.grad for p in params],
            [state["exp_avg"] for state in states],
            [state["exp_avg_sq"] for state in states],
            [],
            [state["step"] for state in states],
            foreach=True,
            amsgrad=False,
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
        )


def split_muon_params(named_params: Iterable[tuple[str, torch.nn.Parameter]]) -> list[dict]:
    """
    Parameter groups for [`MuonAdamW`]: Muon for the hidden layers' matrices and kernels; AdamW for biases, norms,
    the embeddings (class table, time MLP) and the first and last convolutions (`conv_in`, `conv_out`), as Muon's
    authors advise for input and output layers.
    """
    muon, adamw = [], []
    for name, param in named_params:
        if not param.requires_grad:
            continue
        hidden = param.ndim >= 2 and not any(key in name for key in ("conv_in", "conv_out", "embedding"))
        (muon if hidden else adamw).append(param)
    return [dict(params=muon, use_muon=True), dict(params=adamw, use_muon=False)]
