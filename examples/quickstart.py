"""Quickstart: build, save, load and run an MnistDiffusionPipeline (the README's code)."""

import torch
from diffusers import DPMSolverMultistepScheduler

from mnist_diffusion import (
    MnistDDPMScheduler,
    MnistDiffusionPipeline,
    MnistUNet2DConditionModel,
    build_caption_tokenizer,
    build_text_encoder,
)

# Build the components in code (no download). A trained model is loaded with from_pretrained instead.
tokenizer = build_caption_tokenizer()  # word-level CLIP tokenizer for digit captions
text_encoder = build_text_encoder(tokenizer)  # small CLIPTextModel, hidden size 64
unet = MnistUNet2DConditionModel(cross_attention_dim=64, num_class_embeds=11)  # 10 digits + null class
pipe = MnistDiffusionPipeline(
    unet=unet,
    scheduler=MnistDDPMScheduler(),
    text_encoder=text_encoder,
    tokenizer=tokenizer,
    id2label={str(i): str(i) for i in range(10)},
)

# Save in safetensors and load back (diffusers' generic DiffusionPipeline.from_pretrained works too).
pipe.save_pretrained("my-mnist-pipeline")
pipe = MnistDiffusionPipeline.from_pretrained("my-mnist-pipeline")

# Generate: prompt and/or class label, classifier-free guidance, a fast scheduler, the denoising trajectory.
pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
out = pipe(
    "a thick slanted seven",
    class_labels="7",
    num_images_per_prompt=4,
    num_inference_steps=20,
    guidance_scale=3.0,
    generator=torch.Generator().manual_seed(0),
    return_trajectory=True,
)
out.images[0].save("seven.png")  # PIL images ("L" mode, 28x28)
print(out.trajectory.pred_original_samples.shape)  # (20, 4, 1, 28, 28): predicted x_0 at every step

# The forward process: the first sample at 0%, 25%, ..., 100% of the way to pure noise.
first = out.trajectory.latents[-1][:1]
frames = MnistDDPMScheduler().forward_trajectory(first, noise_fractions=[0, 0.25, 0.5, 0.75, 1.0])
print(frames.shape)  # (5, 1, 1, 28, 28)
