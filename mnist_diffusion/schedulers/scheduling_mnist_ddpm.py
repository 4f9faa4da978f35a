"""`MnistDDPMScheduler`: diffusers' DDPM scheduler plus the forward-process, SNR and loss-weight math we need."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from diffusers.configuration_utils import register_to_config
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler

# diffusers' pipeline loader looks up `SchedulerMixin` in the module that defines a third-party scheduler, so this
# module must expose it (it is also the type of `predict_original_sample`'s `scheduler`).
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

#: The defaults of `MnistDDPMScheduler` that differ from `DDPMScheduler`'s. They are always written to the config
#: (never listed in `_use_default_values`), so a scheduler swap such as `DDIMScheduler.from_config(scheduler.config)`
#: keeps the cosine schedule, trailing spacing, unclipped samples and v-prediction; every other key that took its
#: default is listed there, as `DDPMScheduler` lists it, and the swap target then uses its own default for it.
DIGIT_DEFAULTS = ("beta_schedule", "clip_sample", "prediction_type", "timestep_spacing")


def predict_original_sample(
    scheduler: SchedulerMixin, sample: torch.Tensor, model_output: torch.Tensor, timestep: int | torch.Tensor
) -> torch.Tensor:
    r"""
    The clean image x_0 implied by a model output at `timestep`, for any scheduler with `alphas_cumprod`.

    Works with every scheduler built from a DDPM-family config (DDPM, DDIM, DPM-Solver, ...), whatever its
    `prediction_type` ("epsilon", "v_prediction" or "sample"), so a pipeline can show predicted x_0 during sampling
    even when the scheduler's `step` does not return it.

    Example:

    ```py
    >>> import torch
    >>> from mnist_diffusion.schedulers import MnistDDPMScheduler, predict_original_sample

    >>> scheduler = MnistDDPMScheduler()
    >>> x0, noise, t = torch.zeros(1, 1, 28, 28), torch.randn(1, 1, 28, 28), torch.tensor([500])
    >>> xt = scheduler.add_noise(x0, noise, t)
    >>> target = scheduler.training_target(x0, noise, t)  # what a perfect model predicts
    >>> torch.allclose(predict_original_sample(scheduler, xt, target, t), x0, atol=1e-4)
    True
    ```
    """
    return predict_original_sample_and_noise(scheduler, sample, model_output, timestep)[0]


def predict_original_sample_and_noise(
    scheduler: SchedulerMixin, sample: torch.Tensor, model_output: torch.Tensor, timestep: int | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""
    The clean image x_0 and the noise implied by a model output at `timestep` (one or one per sample).

    `scheduler.add_noise(x_0, noise, s)` then takes a deterministic DDIM step to any timestep `s` ([`ddim_jump`]
    does both, and goes to the clean image too). Same schedulers and prediction types as [`predict_original_sample`].

    Example:

    ```py
    >>> import torch
    >>> from mnist_diffusion.schedulers import MnistDDPMScheduler, predict_original_sample_and_noise

    >>> scheduler = MnistDDPMScheduler(prediction_type="v_prediction")
    >>> x0, noise, t = torch.zeros(1, 1, 28, 28), torch.randn(1, 1, 28, 28), torch.tensor([500])
    >>> xt = scheduler.add_noise(x0, noise, t)
    >>> v = scheduler.training_target(x0, noise, t)
    >>> x0_hat, noise_hat = predict_original_sample_and_noise(scheduler, xt, v, t)
    >>> torch.allclose(noise_hat, noise, atol=1e-4)
    True
    ```
    """
    signal_scale, noise_scale = _signal_and_noise_scales(scheduler, timestep, sample)
    sample32, output32 = sample.float(), model_output.float()
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        original, noise = (sample32 - noise_scale * output32) / signal_scale, output32
    elif prediction_type == "v_prediction":
        original = signal_scale * sample32 - noise_scale * output32
        noise = signal_scale * output32 + noise_scale * sample32
    elif prediction_type == "sample":
        original, noise = output32, (sample32 - signal_scale * output32) / noise_scale
    else:
        raise ValueError(
            f"prediction_type {prediction_type!r} is not supported; expected 'epsilon', 'v_prediction' or 'sample'."
        )
    return original.to(sample.dtype), noise.to(sample.dtype)


def _signal_and_noise_scales(scheduler: SchedulerMixin, timestep: torch.Tensor, like: torch.Tensor):
    """`sqrt(alpha_bar)` and `sqrt(1 - alpha_bar)` at each timestep, broadcastable to `like`; timestep -1 is clean."""
    alphas_cumprod = scheduler.alphas_cumprod.to(device=like.device, dtype=torch.float32)
    timestep = torch.as_tensor(timestep, device=like.device).long().reshape(-1)
    alpha_prod = torch.where(timestep >= 0, alphas_cumprod[timestep.clamp(min=0)], torch.ones_like(timestep).float())
    alpha_prod = alpha_prod.reshape(-1, *([1] * (like.ndim - 1)))
    return alpha_prod.sqrt(), (1 - alpha_prod).clamp(min=0).sqrt()


def ddim_jump(
    scheduler: SchedulerMixin,
    sample: torch.Tensor,
    model_output: torch.Tensor,
    timestep: int | torch.Tensor,
    next_timestep: int | torch.Tensor,
) -> torch.Tensor:
    r"""
    One deterministic DDIM step (eta 0) from `timestep` to any lower `next_timestep` (-1: the clean image), one or
    one per sample: `x_s = sqrt(a_s) x_0 + sqrt(1 - a_s) noise`, with x_0 and the noise implied by `model_output`.

    `DDIMScheduler.step` takes the same step between the timesteps of its grid; this form takes per-sample timesteps,
    which progressive distillation (`training/distill.py --method progressive`) needs for its two teacher steps.

    Example:

    ```py
    >>> import torch
    >>> from mnist_diffusion.schedulers import MnistDDPMScheduler, ddim_jump

    >>> scheduler = MnistDDPMScheduler(prediction_type="v_prediction")
    >>> x0, noise, t = torch.zeros(1, 1, 28, 28), torch.randn(1, 1, 28, 28), torch.tensor([500])
    >>> xt = scheduler.add_noise(x0, noise, t)
    >>> v = scheduler.training_target(x0, noise, t)  # a perfect model's output
    >>> torch.allclose(ddim_jump(scheduler, xt, v, t, torch.tensor([-1])), x0, atol=1e-4)
    True
    ```
    """
    original, noise = predict_original_sample_and_noise(scheduler, sample, model_output, timestep)
    signal_scale, noise_scale = _signal_and_noise_scales(scheduler, next_timestep, sample)
    return (signal_scale * original.float() + noise_scale * noise.float()).to(sample.dtype)


def ddim_jump_original(
    scheduler: SchedulerMixin,
    sample: torch.Tensor,
    timestep: int | torch.Tensor,
    next_sample: torch.Tensor,
    next_timestep: int | torch.Tensor,
) -> torch.Tensor:
    r"""
    The x_0 for which [`ddim_jump`] from `sample` at `timestep` lands exactly on `next_sample` at `next_timestep`.

    Solves `x_s = a_s x_0 + (s_s / s_t) (x_t - a_t x_0)` for x_0 (`a` = sqrt(alpha_bar), `s` = sqrt(1 - alpha_bar)):
    the target of progressive distillation (Salimans and Ho 2022), where `next_sample` is two of the teacher's steps
    and the student must cover them in one.

    Example:

    ```py
    >>> import torch
    >>> from mnist_diffusion.schedulers import MnistDDPMScheduler, ddim_jump_original

    >>> scheduler = MnistDDPMScheduler()
    >>> x0, noise = torch.rand(1, 1, 28, 28), torch.randn(1, 1, 28, 28)
    >>> t, s = torch.tensor([700]), torch.tensor([300])
    >>> xt, xs = scheduler.add_noise(x0, noise, t), scheduler.add_noise(x0, noise, s)  # one DDIM path
    >>> torch.allclose(ddim_jump_original(scheduler, xt, t, xs, s), x0, atol=1e-4)
    True
    ```
    """
    signal_t, noise_t = _signal_and_noise_scales(scheduler, timestep, sample)
    signal_s, noise_s = _signal_and_noise_scales(scheduler, next_timestep, sample)
    ratio = noise_s / noise_t
    original = (next_sample.float() - ratio * sample.float()) / (signal_s - ratio * signal_t)
    return original.to(sample.dtype)


def renoise(
    scheduler: SchedulerMixin,
    sample: torch.Tensor,
    from_timestep: int,
    to_timestep: int,
    generator: torch.Generator | list[torch.Generator] | None = None,
) -> torch.Tensor:
    r"""
    Sample `q(x_to | x_from)`: push a sample at `from_timestep` forward to the noisier `to_timestep` in one jump.

    `x_to = sqrt(a_to / a_from) x_from + sqrt(1 - a_to / a_from) noise` with `a` the scheduler's `alphas_cumprod`
    (`from_timestep=-1` is the clean sample, `a = 1`). This is the resampling move of RePaint (Lugmayr et al., 2022)
    that inpainting uses to harmonise the generated region with the known one; any scheduler with `alphas_cumprod`
    (DDPM, DDIM, ...) works.

    Example:

    ```py
    >>> import torch
    >>> from mnist_diffusion.schedulers import MnistDDPMScheduler, renoise

    >>> scheduler = MnistDDPMScheduler()
    >>> x = renoise(scheduler, torch.zeros(2, 1, 28, 28), from_timestep=-1, to_timestep=999)
    >>> round(float(x.std()), 1)  # pure noise at the last timestep
    1.0
    ```
    """
    if not -1 <= from_timestep < to_timestep < scheduler.config.num_train_timesteps:
        raise ValueError(
            f"renoise goes from timestep {from_timestep} to {to_timestep}; expected "
            f"-1 <= from_timestep < to_timestep < {scheduler.config.num_train_timesteps}."
        )
    alphas_cumprod = scheduler.alphas_cumprod.to(dtype=torch.float64)
    alpha_from = alphas_cumprod[from_timestep] if from_timestep >= 0 else torch.tensor(1.0, dtype=torch.float64)
    ratio = alphas_cumprod[to_timestep] / alpha_from
    noise = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
    return (ratio.sqrt().item() * sample + (1 - ratio).sqrt().item() * noise).to(sample.dtype)


class MnistDDPMScheduler(DDPMScheduler):
    r"""
    [`DDPMScheduler`] with defaults for 28x28 digits and the extra noise-schedule math this project uses.

    Everything of `DDPMScheduler` (config keys, `set_timesteps`, `step`, `add_noise`, `get_velocity`,
    `save_pretrained`/`from_pretrained`, `from_config`) is unchanged; it only changes defaults (recorded as
    [`DIGIT_DEFAULTS`] describes) and adds methods:

    - [`~MnistDDPMScheduler.forward_trajectory`]: one image noised to several timesteps or noise percentages with
      the same noise (the "watch a digit dissolve into noise" figure; `q_sample` in course notebooks);
    - [`~MnistDDPMScheduler.timesteps_from_noise_fractions`]: map "percent of the way to pure noise" to timesteps;
    - [`~MnistDDPMScheduler.snr`] and [`~MnistDDPMScheduler.min_snr_loss_weights`] (Min-SNR-gamma weighting,
      Hang et al. 2023) for `epsilon`, `v_prediction` and `sample` targets.

    Default choices for 28x28 images (all overridable, all plain `DDPMScheduler` config keys):
    - `beta_schedule="squaredcos_cap_v2"`: the cosine schedule of Nichol & Dhariwal (2021). With the linear schedule a
      28x28 digit is unrecognisable after about a third of the timesteps, so most training steps are wasted on pure
      noise; the cosine schedule destroys information evenly across timesteps.
    - `timestep_spacing="trailing"`: inference with few steps starts at the last training timestep (pure noise), as
      recommended by Lin et al. (2024); this matters when swapping in DDIM or DPM-Solver with 20-50 steps.
    - `prediction_type="v_prediction"`: under the cosine schedule the last timesteps have SNR near 1e-9, where
      recovering x_0 from predicted noise divides by `sqrt(alpha_bar)` (about 5e-5 at t=999), so deterministic
      samplers (DDIM, DPM-Solver++) start from garbage; with `v` the clean image is `sqrt(a) x_t - sqrt(1 - a) v`,
      well conditioned at every timestep (Salimans & Ho, 2022).
    - `clip_sample=False`: DDIM, built from this config by a scheduler swap, clips x_0 but keeps the unclipped noise
      estimate, which derails it with v-prediction (the measurements are in docs/design.md).

    Example:

    ```py
    >>> import torch
    >>> from mnist_diffusion import MnistDDPMScheduler
    >>> from diffusers import DPMSolverMultistepScheduler

    >>> scheduler = MnistDDPMScheduler()
    >>> image = torch.rand(1, 1, 28, 28) * 2 - 1
    >>> frames = scheduler.forward_trajectory(image, noise_fractions=[0.0, 0.25, 0.5, 0.75, 1.0])
    >>> frames.shape
    torch.Size([5, 1, 1, 28, 28])
    >>> dpm = DPMSolverMultistepScheduler.from_config(scheduler.config)
    >>> MnistDDPMScheduler.from_config(dpm.config).config.beta_schedule
    'squaredcos_cap_v2'
    ```
    """

    _compatibles = DDPMScheduler._compatibles + ["DDPMScheduler"]

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"] = "squaredcos_cap_v2",
        trained_betas: np.ndarray | list[float] | None = None,
        variance_type: str = "fixed_small",
        clip_sample: bool = False,
        prediction_type: Literal["epsilon", "sample", "v_prediction"] = "v_prediction",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: Literal["linspace", "leading", "trailing"] = "trailing",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
    ):
        # `register_to_config` has recorded every argument and which ones took their default; the parent's own
        # decorated `__init__` below receives them all explicitly and adds nothing to that record.
        defaulted = self.config.get("_use_default_values", [])
        super().__init__(
            num_train_timesteps=num_train_timesteps,
            beta_start=beta_start,
            beta_end=beta_end,
            beta_schedule=beta_schedule,
            trained_betas=trained_betas,
            variance_type=variance_type,
            clip_sample=clip_sample,
            prediction_type=prediction_type,
            thresholding=thresholding,
            dynamic_thresholding_ratio=dynamic_thresholding_ratio,
            clip_sample_range=clip_sample_range,
            sample_max_value=sample_max_value,
            timestep_spacing=timestep_spacing,
            steps_offset=steps_offset,
            rescale_betas_zero_snr=rescale_betas_zero_snr,
        )
        if defaulted:
            self.register_to_config(_use_default_values=sorted(set(defaulted) - set(DIGIT_DEFAULTS)))

    def timesteps_from_noise_fractions(self, noise_fractions: Sequence[float] | torch.Tensor) -> torch.Tensor:
        r"""
        Training timesteps for fractions of the forward process: 0.0 is the clean image, 1.0 the last timestep.

        A fraction `p > 0` maps to timestep `round(p * num_train_timesteps) - 1` (at least 0); `p == 0` maps to -1,
        which [`~MnistDDPMScheduler.forward_trajectory`] treats as "no noise at all".
        """
        fractions = torch.as_tensor(noise_fractions, dtype=torch.float64).reshape(-1)
        if ((fractions < 0) | (fractions > 1)).any():
            raise ValueError(f"noise_fractions must lie in [0, 1], got {fractions.tolist()}.")
        steps = torch.round(fractions * self.config.num_train_timesteps).long() - 1
        return torch.where(fractions > 0, steps.clamp(min=0), torch.full_like(steps, -1))

    def forward_trajectory(
        self,
        original_samples: torch.Tensor,
        timesteps: Sequence[int] | torch.Tensor | None = None,
        noise_fractions: Sequence[float] | torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        r"""
        Sample `q(x_t | x_0)` for the same images at several timesteps, with one shared noise draw.

        Args:
            original_samples (`torch.Tensor`): Clean images `(batch, channels, height, width)` in [-1, 1].
            timesteps (`Sequence[int]`, *optional*): Training timesteps in `[0, num_train_timesteps)`; -1 means the
                clean image. Give this or `noise_fractions`.
            noise_fractions (`Sequence[float]`, *optional*): Fractions in [0, 1] of the forward process, mapped by
                [`~MnistDDPMScheduler.timesteps_from_noise_fractions`].
            noise (`torch.Tensor`, *optional*): The noise to use, shaped like `original_samples`.
            generator (`torch.Generator`, *optional*): Makes the noise draw reproducible.

        Returns:
            `torch.Tensor`: `(len(timesteps), batch, channels, height, width)`; frame `i` is `x_{timesteps[i]}`.
        """
        if (timesteps is None) == (noise_fractions is None):
            raise ValueError("Pass exactly one of `timesteps` or `noise_fractions`.")
        if timesteps is None:
            timesteps = self.timesteps_from_noise_fractions(noise_fractions)
        timesteps = torch.as_tensor(timesteps, dtype=torch.long).reshape(-1)
        if ((timesteps < -1) | (timesteps >= self.config.num_train_timesteps)).any():
            raise ValueError(
                f"timesteps must lie in [-1, {self.config.num_train_timesteps - 1}], got {timesteps.tolist()}."
            )
        if noise is None:
            noise = randn_tensor(
                original_samples.shape,
                generator=generator,
                device=original_samples.device,
                dtype=original_samples.dtype,
            )
        elif noise.shape != original_samples.shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {tuple(original_samples.shape)}.")
        frames = []
        for t in timesteps.tolist():
            if t < 0:
                frames.append(original_samples.clone())
            else:
                t_batch = torch.full((original_samples.shape[0],), t, device=original_samples.device)
                frames.append(self.add_noise(original_samples, noise, t_batch))
        return torch.stack(frames)

    def snr(self, timesteps: torch.Tensor) -> torch.Tensor:
        r"""Signal-to-noise ratio `alpha_bar_t / (1 - alpha_bar_t)` at each of `timesteps` (float32)."""
        alphas_cumprod = self.alphas_cumprod.to(timesteps.device)[timesteps.long()].float()
        return alphas_cumprod / (1 - alphas_cumprod)

    def sample_training_timesteps(
        self,
        batch_size: int,
        log_snr_mean: float | None = None,
        log_snr_std: float = 2.0,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        r"""
        Training timesteps for a batch: uniform over `[0, num_train_timesteps)`, or normal in log-SNR.

        With `log_snr_mean` set, `log(SNR) ~ N(log_snr_mean, log_snr_std^2)` and each draw maps to the timestep whose
        log-SNR is nearest: training concentrates on the noise levels around that SNR, as EDM's log-normal noise
        sampling (Karras et al., 2022) and the logit-normal timesteps of Esser et al. (2024) do, instead of spending
        steps on near-pure noise and near-clean images where there is little left to learn.

        Args:
            batch_size (`int`): How many timesteps.
            log_snr_mean (`float`, *optional*): Centre of the log-SNR distribution (0 is SNR 1, as much signal as
                noise); `None` for uniform timesteps.
            log_snr_std (`float`, defaults to 2.0): Its spread; must be positive.
            generator (`torch.Generator`, *optional*): Makes the draw reproducible.
            device (`torch.device`, *optional*): Where the timesteps go.

        Example:

        ```py
        >>> from mnist_diffusion import MnistDDPMScheduler

        >>> scheduler = MnistDDPMScheduler()
        >>> timesteps = scheduler.sample_training_timesteps(4096, log_snr_mean=0.0)
        >>> bool((scheduler.snr(timesteps).log().median().abs() < 0.2).item())
        True
        ```
        """
        num_steps = self.config.num_train_timesteps
        if log_snr_mean is None:
            return torch.randint(0, num_steps, (batch_size,), generator=generator, device=device)
        if not (math.isfinite(log_snr_mean) and math.isfinite(log_snr_std) and log_snr_std > 0):
            raise ValueError(
                f"log_snr_mean {log_snr_mean}, log_snr_std {log_snr_std}; expected finite numbers and a std > 0."
            )
        log_snr = log_snr_mean + log_snr_std * torch.randn(batch_size, generator=generator, dtype=torch.float64)
        table = self.snr(torch.arange(num_steps)).double().log().flip(0)  # increasing: t = T-1 ... 0
        right = torch.searchsorted(table, log_snr).clamp(1, num_steps - 1)
        nearer_left = (log_snr - table[right - 1]).abs() < (table[right] - log_snr).abs()
        index = torch.where(nearer_left, right - 1, right)
        return (num_steps - 1 - index).to(device)

    def min_snr_loss_weights(
        self, timesteps: torch.Tensor, snr_gamma: float, prediction_type: str | None = None
    ) -> torch.Tensor:
        r"""
        Per-sample weights for the mean-squared-error loss under Min-SNR-gamma weighting (Hang et al., 2023).

        The weight makes the loss equivalent to `min(SNR, gamma) * ||x_0 - x_0_hat||^2`: `min(SNR, gamma) / SNR` for
        `epsilon`, `min(SNR, gamma) / (SNR + 1)` for `v_prediction` and `min(SNR, gamma)` for `sample` targets.

        Args:
            timesteps (`torch.Tensor`): The training timesteps of the batch.
            snr_gamma (`float`): The clamp gamma (5.0 in the paper); must be positive.
            prediction_type (`str`, *optional*): Target type; the scheduler's own by default.
        """
        if snr_gamma <= 0:
            raise ValueError(f"snr_gamma must be positive, got {snr_gamma}.")
        prediction_type = prediction_type or self.config.prediction_type
        snr = self.snr(timesteps)
        clamped = torch.clamp(snr, max=snr_gamma)
        if prediction_type == "epsilon":
            return clamped / snr
        if prediction_type == "v_prediction":
            return clamped / (snr + 1)
        if prediction_type == "sample":
            return clamped
        raise ValueError(
            f"prediction_type {prediction_type!r} is not supported; expected 'epsilon', 'v_prediction' or 'sample'."
        )

    def training_target(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        r"""What the network must predict for `prediction_type`: the noise, the velocity or the clean sample."""
        prediction_type = self.config.prediction_type
        if prediction_type == "epsilon":
            return noise
        if prediction_type == "v_prediction":
            return self.get_velocity(original_samples, noise, timesteps)
        if prediction_type == "sample":
            return original_samples
        raise ValueError(
            f"prediction_type {prediction_type!r} is not supported; expected 'epsilon', 'v_prediction' or 'sample'."
        )
