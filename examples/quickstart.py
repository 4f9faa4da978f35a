"""Quickstart: generate with the released model shipped in the package, watch it denoise (the README's code)."""

import torch
from diffusers import DPMSolverMultistepScheduler

from mnist_diffusion import MnistDDPMScheduler, MnistDiffusionPipeline
from mnist_diffusion.pretrained import DIFFUSION_MODEL

# The released digits model ships inside the package (safetensors, a few MB): nothing is downloaded.
pipe = MnistDiffusionPipeline.from_pretrained(DIFFUSION_MODEL)

# A prompt, classifier-free guidance, a fast scheduler, and the denoising trajectory.
pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
out = pipe(
    "a thick slanted 7",
    num_images_per_prompt=4,
    num_inference_steps=20,
    generator=torch.Generator().manual_seed(0),
    return_trajectory=True,
)
out.images[0].save("seven.png")  # PIL images ("L" mode, 28x28)
print(out.trajectory.pred_original_samples.shape)  # (20, 4, 1, 28, 28): predicted x_0 at every step

# Class labels, by id or name, alone or with a prompt; numpy output.
digits = pipe(class_labels=list(range(10)), num_inference_steps=20, output_type="np").images
print(digits.shape)  # (10, 28, 28, 1)

# The forward process: the first sample at 0%, 25%, ..., 100% of the way to pure noise.
first = out.trajectory.latents[-1][:1]
frames = MnistDDPMScheduler().forward_trajectory(first, noise_fractions=[0, 0.25, 0.5, 0.75, 1.0])
print(frames.shape)  # (5, 1, 1, 28, 28)

# Every component saves and loads in safetensors (diffusers' generic DiffusionPipeline loads it too).
pipe.save_pretrained("my-mnist-pipeline")
pipe = MnistDiffusionPipeline.from_pretrained("my-mnist-pipeline")
