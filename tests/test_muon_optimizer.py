"""Tests of `mnist_diffusion.training.muon_optimizer`: the orthogonalisation, parameter split, update sizes, errors."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_unet

from mnist_diffusion.training import muon_optimizer as muon


@pytest.mark.parametrize("shape", [(3, 16, 48), (2, 48, 16), (1, 32, 32)])
def test_orthogonalize_pushes_singular_values_towards_one(shape):
    torch.manual_seed(0)
    updates = torch.randn(shape) * torch.logspace(-1.5, 0, shape[2])  # columns 30x apart
    singular_values = torch.linalg.svdvals(muon.orthogonalize(updates))
    assert singular_values.shape == (shape[0], min(shape[1:]))
    assert singular_values.min() > 0.5 and singular_values.max() < 1.3, singular_values


def test_split_puts_hidden_matrices_and_kernels_in_muon_and_the_rest_in_adamw():
    torch.manual_seed(0)
    unet = make_tiny_unet()
    muon_group, adamw_group = muon.split_muon_params(unet.named_parameters())
    assert muon_group["use_muon"] and not adamw_group["use_muon"]
    names = {id(param): name for name, param in unet.named_parameters()}
    muon_names = [names[id(param)] for param in muon_group["params"]]
    adamw_names = [names[id(param)] for param in adamw_group["params"]]
    assert all(param.ndim >= 2 for param in muon_group["params"])
    assert any(".conv1.weight" in name for name in muon_names) and any("to_q" in name for name in muon_names)
    assert {"conv_in.weight", "conv_out.weight", "conv_in.bias"} <= set(adamw_names)
    assert any("embedding" in name for name in adamw_names)
    assert len(muon_names) + len(adamw_names) == len(list(unet.parameters()))


def test_a_muon_step_has_the_rms_of_an_adamw_step_and_decays_weights():
    torch.manual_seed(0)
    kernel = torch.nn.Parameter(torch.randn(32, 16, 3, 3))
    bias = torch.nn.Parameter(torch.randn(32))
    lr, weight_decay = 1e-2, 0.1
    optimizer = muon.MuonAdamW(
        [dict(params=[kernel], use_muon=True), dict(params=[bias], use_muon=False)], lr=lr, weight_decay=weight_decay
    )
    before_kernel, before_bias = kernel.detach().clone(), bias.detach().clone()
    kernel.grad, bias.grad = torch.randn_like(kernel) * 1e-4, torch.randn_like(bias)
    optimizer.step()
    change = kernel.detach() - before_kernel * (1 - lr * weight_decay)
    assert 0.14 * lr < change.square().mean().sqrt() < 0.26 * lr  # independent of the gradient's scale
    # AdamW's first step moves each bias by about lr against its gradient's sign.
    bias_change = bias.detach() - before_bias * (1 - lr * weight_decay)
    torch.testing.assert_close(bias_change, -lr * torch.sign(bias.grad), atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize(
    "groups, kwargs, message",
    [
        ([dict(params=[torch.nn.Parameter(torch.zeros(4))], use_muon=True)], {}, "fewer than 2 dimensions"),
        ([dict(params=[torch.nn.Parameter(torch.zeros(4, 4))])], {}, "without 'use_muon'"),
        ([dict(params=[torch.nn.Parameter(torch.zeros(4, 4))], use_muon=True)], {"momentum": 1.0}, "momentum 1.0"),
        ([dict(params=[torch.nn.Parameter(torch.zeros(4, 4))], use_muon=True)], {"lr": 0.0}, "lr 0.0"),
    ],
)
def test_bad_groups_and_settings_are_refused(groups, kwargs, message):
    with pytest.raises(ValueError, match=message):
        muon.MuonAdamW(groups, **{"lr": 1e-3, **kwargs})
