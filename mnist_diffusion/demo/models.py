"""`DemoModels`: the demo's one loaded copy of the pipeline (one view per scheduler), classifier and test digits."""

from __future__ import annotations

import numpy as np
import PIL.Image
import torch

from ..evaluation import class_names_and_classifier
from ..loading import fast_views, open_pipeline, scheduler_from_config
from ..pipelines import MnistDiffusionPipeline, MnistImg2ImgPipeline, MnistInpaintPipeline
from ..pretrained import FAST_GUIDANCE_SCALE, FAST_STEPS
from ..schedulers import MnistDDPMScheduler, predict_original_sample
from .test_digits import load_test_digits

#: The schedulers offered in the demo: display name -> key of `mnist_diffusion.loading.SCHEDULERS`.
SCHEDULER_NAMES = {"DPM-Solver++": "dpm", "DDIM": "ddim", "DDPM": "ddpm"}
#: The Generate tab's sampler for the shipped few-step student (`mnist-diffusion generate --fast`).
FEW_STEP = "Few-step (distilled)"
#: Default steps of each sampler: the few-step students' `FAST_STEPS`, 20 for the release's schedulers.
DEFAULT_STEPS = {FEW_STEP: FAST_STEPS} | dict.fromkeys(SCHEDULER_NAMES, 20)
#: Default guidance scale of each sampler: the students' `FAST_GUIDANCE_SCALE` (as `generate --fast`), and the
#: release's recommended setting with DPM-Solver++-20 (model card) for its schedulers.
DEFAULT_GUIDANCE = {FEW_STEP: FAST_GUIDANCE_SCALE} | dict.fromkeys(SCHEDULER_NAMES, 1.4)
#: Most steps of the few-step sampler (its 4-step student samples 8 steps well; more is the release's job).
MAX_FEW_STEPS = 8


class DemoModels:
    r"""
    The models behind the demo, loaded once and shared by every tab and every user.

    The pipeline is loaded once; for each scheduler of [`SCHEDULER_NAMES`], text-to-image, image-to-image and
    inpainting views of it are built with `from_pipe`, which shares the UNet, text encoder and tokenizer (no weight
    is copied); each view gets its own scheduler instance (a scheduler keeps per-call state).

    With the shipped release (`model=None`), its few-step students (`FAST_DIFFUSION_MODEL`, distilled from it) are the
    sampler [`FEW_STEP`]: `few_step` holds, for each of 1 to `MAX_FEW_STEPS` steps, a view with the student's UNet
    distilled for that step count and its `DDIMScheduler`; `from_pipe` gives them the release's text encoder and
    tokenizer, which the students share (their own are the same files). `samplers[FEW_STEP]` is the 4-step view.

    Args:
        model (`str`, *optional*): A pipeline folder or Hub repo id; the released model shipped with the package by
            default.

    Example:

    ```py
    >>> from mnist_diffusion.demo.models import DemoModels

    >>> models = DemoModels()
    >>> models.pipes["DDIM"].unet is models.img2img["DPM-Solver++"].unet is models.inpaint["DDPM"].unet
    True
    >>> models.samplers["Few-step (distilled)"].text_encoder is models.pipe.text_encoder
    True
    >>> models.few_step[1].unet is models.few_step[2].unet
    False
    ```
    """

    def __init__(self, model: str | None = None):
        base = open_pipeline(model)
        base.set_progress_bar_config(disable=True)
        self.model = model
        self.pipes: dict[str, MnistDiffusionPipeline] = {}
        self.img2img: dict[str, MnistImg2ImgPipeline] = {}
        self.inpaint: dict[str, MnistInpaintPipeline] = {}
        kinds = (
            (self.pipes, MnistDiffusionPipeline),
            (self.img2img, MnistImg2ImgPipeline),
            (self.inpaint, MnistInpaintPipeline),
        )
        for name, key in SCHEDULER_NAMES.items():
            for views, cls in kinds:
                views[name] = cls.from_pipe(base, scheduler=scheduler_from_config(key, base.scheduler.config))
        #: The few-step sampler's view for each step count it takes (empty for a model without students).
        self.few_step: dict[int, MnistDiffusionPipeline] = {}
        if model is None:
            self.few_step = fast_views(base, range(1, MAX_FEW_STEPS + 1))
        #: The Generate tab's samplers: the few-step student first when there is one, then `pipes`.
        self.samplers: dict[str, MnistDiffusionPipeline] = {FEW_STEP: self.few_step[4]} if self.few_step else {}
        self.samplers |= self.pipes
        self.class_names, classifier = class_names_and_classifier(base, None)
        self.classifier = classifier.eval()
        # The forward process of the tab "The forward process": the scheduler's own `forward_trajectory`.
        self.noise_scheduler = MnistDDPMScheduler.from_config(base.scheduler.config)
        self.test_digits, self.test_labels = load_test_digits()

    @property
    def pipe(self) -> MnistDiffusionPipeline:
        """The view with the default scheduler (DPM-Solver++), e.g. for the components' configs."""
        return self.pipes["DPM-Solver++"]

    @property
    def has_text_encoder(self) -> bool:
        """Whether the pipeline takes prompts."""
        return self.pipe.text_encoder is not None

    @torch.no_grad()
    def read(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""The classifier's reading of images in [-1, 1]: predicted class ids and their probabilities `(n,)`."""
        probabilities = self.classifier((images.clamp(-1, 1) + 1) / 2).softmax(dim=1)
        confidence, labels = probabilities.max(dim=1)
        return labels, confidence

    @torch.no_grad()
    def predict_clean(self, noisy: torch.Tensor, timestep: int) -> torch.Tensor:
        r"""
        The model's guess of the clean images behind `noisy` (`(n, 1, 28, 28)`, noised to `timestep` by
        `noise_scheduler`), with no prompt and no class: its predicted x_0 in [-1, 1], from the noisy pixels alone.

        Call it on the sampling worker: it reads the shared pipeline's guidance state.
        """
        pipe, count = self.pipe, noisy.shape[0]
        conditioning = pipe.encode_conditioning(None, None, None, 1, noisy.device, batch_size=count)
        # with guidance on, the batch holds an unconditional half twice: one is enough
        inputs = {
            k: v if v is None else v[-count:] for k, v in conditioning.items() if v is not None or k == "class_labels"
        }
        timesteps = torch.full((count,), timestep)
        model_input = self.noise_scheduler.scale_model_input(noisy, timesteps)
        model_output = pipe.unet(model_input, timesteps, return_dict=False, **inputs)[0]
        return predict_original_sample(self.noise_scheduler, noisy, model_output, timesteps).clamp(-1, 1)

    def read_images(self, images: list[PIL.Image.Image]) -> torch.Tensor:
        r"""The classifier's class id for each of the pipeline's PIL `images` (grayscale, the UNet's size), `(n,)`."""
        batch = torch.from_numpy(np.stack([np.asarray(image) for image in images]))
        return self.read(batch.unsqueeze(1).float() / 127.5 - 1)[0]
