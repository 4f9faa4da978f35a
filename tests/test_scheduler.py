"""Tests of MnistDDPMScheduler: DDPM compatibility, forward trajectory, SNR weights, swaps and round trips."""

import json

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from mnist_diffusion import MnistDDPMScheduler
from mnist_diffusion.schedulers import ddim_jump, ddim_jump_original, predict_original_sample
from mnist_diffusion.schedulers.scheduling_mnist_ddpm import DIGIT_DEFAULTS


def test_is_a_ddpm_scheduler_with_digit_defaults():
    scheduler = MnistDDPMScheduler()
    assert isinstance(scheduler, DDPMScheduler)
    assert scheduler.config.beta_schedule == "squaredcos_cap_v2"
    assert scheduler.config.timestep_spacing == "trailing"
    assert scheduler.config.prediction_type == "v_prediction"
    assert scheduler.config.clip_sample is False
    reference = DDPMScheduler(beta_schedule="squaredcos_cap_v2", timestep_spacing="trailing", clip_sample=False)
    assert torch.equal(scheduler.alphas_cumprod, reference.alphas_cumprod)
    scheduler.set_timesteps(10)
    reference.set_timesteps(10)
    assert torch.equal(scheduler.timesteps, reference.timesteps)


def test_config_records_defaults_as_ddpm_does_except_the_digit_defaults(tmp_path):
    ours, theirs = MnistDDPMScheduler(steps_offset=1), DDPMScheduler(steps_offset=1)
    # Every defaulted key is listed, as DDPMScheduler lists it, except the four defaults of our own (kept in swaps).
    assert set(ours.config["_use_default_values"]) == set(theirs.config["_use_default_values"]) - set(DIGIT_DEFAULTS)
    assert "steps_offset" not in ours.config["_use_default_values"]
    assert set(MnistDDPMScheduler(**{k: DDPMScheduler().config[k] for k in DIGIT_DEFAULTS}).config) == set(ours.config)
    # An old config without some keys: like DDPMScheduler, they take this class's defaults and are recorded.
    old = {"num_train_timesteps": 500, "prediction_type": "epsilon"}
    loaded = MnistDDPMScheduler.from_config(old)
    assert loaded.config.beta_schedule == "squaredcos_cap_v2" and loaded.config.prediction_type == "epsilon"
    assert set(loaded.config["_use_default_values"]) == set(DDPMScheduler.from_config(old).config[
        "_use_default_values"]) - set(DIGIT_DEFAULTS)  # fmt: skip
    # A swap to DDIM keeps our defaults and uses DDIM's own for the rest (DDIM's set_alpha_to_one is its own key).
    ddim = DDIMScheduler.from_config(MnistDDPMScheduler(num_train_timesteps=500).config)
    assert (ddim.config.beta_schedule, ddim.config.clip_sample, ddim.config.num_train_timesteps) == (
        "squaredcos_cap_v2",
        False,
        500,
    )
    # from_config overrides, and a saved config holds every key and no record (popped on save, as diffusers does).
    assert MnistDDPMScheduler.from_config(ours.config, prediction_type="sample").config.prediction_type == "sample"
    ours.save_config(tmp_path)
    saved = json.loads((tmp_path / "scheduler_config.json").read_text())
    assert "_use_default_values" not in saved and set(MnistDDPMScheduler._get_init_keys(MnistDDPMScheduler)) - {
        "self"
    } <= set(saved)
    reloaded = MnistDDPMScheduler.from_pretrained(tmp_path)
    assert "_use_default_values" not in reloaded.config
    assert {k: v for k, v in reloaded.config.items() if not k.startswith("_")} == {
        k: v for k, v in ours.config.items() if not k.startswith("_")
    }


def test_save_and_load_round_trip(tmp_path):
    scheduler = MnistDDPMScheduler(prediction_type="v_prediction", num_train_timesteps=500)
    scheduler.save_pretrained(tmp_path)
    loaded = MnistDDPMScheduler.from_pretrained(tmp_path)
    assert {k: v for k, v in loaded.config.items() if not k.startswith("_")} == {
        k: v for k, v in scheduler.config.items() if not k.startswith("_")
    }


@pytest.mark.parametrize("other", [DDIMScheduler, DPMSolverMultistepScheduler, DDPMScheduler])
def test_swaps_keep_the_schedule_both_ways(other):
    scheduler = MnistDDPMScheduler(prediction_type="v_prediction")
    swapped = other.from_config(scheduler.config)
    assert swapped.config.beta_schedule == "squaredcos_cap_v2"
    assert swapped.config.timestep_spacing == "trailing"
    assert swapped.config.prediction_type == "v_prediction"
    assert torch.allclose(swapped.alphas_cumprod, scheduler.alphas_cumprod)
    back = MnistDDPMScheduler.from_config(swapped.config)
    assert isinstance(back, MnistDDPMScheduler)
    assert back.config.beta_schedule == "squaredcos_cap_v2" and back.config.prediction_type == "v_prediction"


def test_forward_trajectory_shares_noise_and_matches_add_noise():
    scheduler = MnistDDPMScheduler()
    image = torch.rand(2, 1, 8, 8) * 2 - 1
    noise = torch.randn_like(image)
    frames = scheduler.forward_trajectory(image, timesteps=[-1, 0, 250, 999], noise=noise)
    assert frames.shape == (4, 2, 1, 8, 8)
    assert torch.equal(frames[0], image)
    assert torch.allclose(frames[2], scheduler.add_noise(image, noise, torch.tensor([250, 250])))
    # at the last timestep almost nothing of the image is left
    assert torch.allclose(frames[3], noise, atol=1e-3)


def test_forward_trajectory_is_reproducible_with_a_generator():
    scheduler = MnistDDPMScheduler()
    image = torch.zeros(1, 1, 8, 8)
    a = scheduler.forward_trajectory(image, noise_fractions=[0.5], generator=torch.Generator().manual_seed(3))
    b = scheduler.forward_trajectory(image, noise_fractions=[0.5], generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_noise_fractions_map_to_timesteps():
    scheduler = MnistDDPMScheduler()
    assert scheduler.timesteps_from_noise_fractions([0.0, 0.0001, 0.25, 1.0]).tolist() == [-1, 0, 249, 999]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        scheduler.timesteps_from_noise_fractions([1.5])


def test_forward_trajectory_bad_input():
    scheduler = MnistDDPMScheduler()
    image = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match="exactly one"):
        scheduler.forward_trajectory(image)
    with pytest.raises(ValueError, match="timesteps must lie"):
        scheduler.forward_trajectory(image, timesteps=[1000])
    with pytest.raises(ValueError, match="noise has shape"):
        scheduler.forward_trajectory(image, timesteps=[3], noise=torch.zeros(2, 1, 8, 8))


def test_snr_is_decreasing_and_min_snr_weights_follow_the_paper():
    scheduler = MnistDDPMScheduler()
    t = torch.tensor([0, 100, 500, 900, 999])
    snr = scheduler.snr(t)
    assert (snr[1:] < snr[:-1]).all()
    gamma = 5.0
    clamped = torch.clamp(snr, max=gamma)
    assert torch.allclose(scheduler.min_snr_loss_weights(t, gamma, "epsilon"), clamped / snr)
    assert torch.allclose(scheduler.min_snr_loss_weights(t, gamma, "v_prediction"), clamped / (snr + 1))
    assert torch.allclose(scheduler.min_snr_loss_weights(t, gamma, "sample"), clamped)
    with pytest.raises(ValueError, match="snr_gamma"):
        scheduler.min_snr_loss_weights(t, 0)
    with pytest.raises(ValueError, match="prediction_type"):
        scheduler.min_snr_loss_weights(t, gamma, "flow")


def test_training_timesteps_uniform_by_default_and_normal_in_log_snr_on_request():
    scheduler = MnistDDPMScheduler()
    uniform = scheduler.sample_training_timesteps(8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(uniform, torch.randint(0, 1000, (8,), generator=torch.Generator().manual_seed(0)))

    draws = [scheduler.sample_training_timesteps(4000, -1.0, 1.5, generator=torch.Generator().manual_seed(0))]
    draws.append(scheduler.sample_training_timesteps(4000, -1.0, 1.5, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(*draws) and draws[0].dtype == torch.long
    assert 0 <= draws[0].min() and draws[0].max() <= 999
    log_snr = scheduler.snr(draws[0]).log()
    assert abs(log_snr.median().item() + 1.0) < 0.15 and abs(log_snr.std().item() - 1.5) < 0.15
    # each draw lands on the timestep with the nearest log-SNR
    table = scheduler.snr(torch.arange(1000)).log()
    target = torch.tensor([3.0, 0.0, -2.5])
    timesteps = scheduler.sample_training_timesteps(3, 0.0, 1e-9, device="cpu")
    assert torch.equal(timesteps, torch.full((3,), int((table - 0.0).abs().argmin())))
    for value in target.tolist():
        nearest = int((table - value).abs().argmin())
        assert scheduler.sample_training_timesteps(1, value, 1e-9).item() == nearest

    with pytest.raises(ValueError, match="log_snr_std 0"):
        scheduler.sample_training_timesteps(4, 0.0, 0)
    with pytest.raises(ValueError, match="log_snr_mean nan"):
        scheduler.sample_training_timesteps(4, float("nan"))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_training_target_and_predict_original_sample_invert_each_other(prediction_type):
    scheduler = MnistDDPMScheduler(prediction_type=prediction_type)
    x0 = torch.rand(3, 1, 8, 8) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([10, 400, 950])
    xt = scheduler.add_noise(x0, noise, t)
    target = scheduler.training_target(x0, noise, t)
    assert torch.allclose(predict_original_sample(scheduler, xt, target, t), x0, atol=1e-3)
    ddim = DDIMScheduler.from_config(scheduler.config)
    assert torch.allclose(predict_original_sample(ddim, xt, target, t), x0, atol=1e-3)


def test_ddim_jump_takes_ddim_schedulers_steps_and_its_inverse_recovers_the_original():
    torch.manual_seed(0)
    scheduler = MnistDDPMScheduler(prediction_type="v_prediction")
    ddim = DDIMScheduler.from_config(scheduler.config, set_alpha_to_one=True)
    ddim.set_timesteps(4)
    sample = torch.randn(2, 1, 8, 8)
    for t in ddim.timesteps.tolist():  # 999, 749, 499, 249 -> clean
        output = torch.randn(2, 1, 8, 8)
        expected = ddim.step(output, t, sample).prev_sample
        following = t - 250
        jumped = ddim_jump(scheduler, sample, output, torch.tensor([t, t]), torch.tensor([following] * 2))
        torch.testing.assert_close(jumped, expected, atol=1e-4, rtol=1e-4)
        # the x_0 whose single step lands there is the one the model implied
        original = ddim_jump_original(scheduler, sample, torch.tensor([t, t]), jumped, torch.tensor([following] * 2))
        torch.testing.assert_close(
            original, predict_original_sample(scheduler, sample, output, t), atol=1e-3, rtol=1e-3
        )
        sample = jumped
