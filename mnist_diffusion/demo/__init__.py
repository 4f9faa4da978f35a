"""The Gradio demo (`mnist-diffusion demo`, `app.py`): generate, watch the denoising, the forward process, draw."""

from .app import build_demo, launch

__all__ = ["build_demo", "launch"]
