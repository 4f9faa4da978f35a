"""The Gradio demo (`mnist-diffusion demo`, `app.py`): generate, watch it denoise, the forward process, draw, LoRA."""

__all__ = ["build_demo", "launch"]


def __getattr__(name: str):
    # Gradio is imported only when the app is asked for, so the demo's other modules work without the extra.
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
