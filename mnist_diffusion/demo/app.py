"""The demo's Gradio app: the tabs' layout, their events, the queue, and `launch`."""

from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr
import torch

from ..training.lora import LoraRecipe
from .batching import SamplingWorker
from .handlers import (
    DRAW_MODE_HELP,
    DRAW_MODES,
    MAX_DRAW_IMAGES,
    MAX_GUIDANCE,
    MAX_IMAGES,
    MAX_STEPS,
    NO_CLASS,
    STRENGTH_LABELS,
    STYLE_PRESETS,
    DemoHandlers,
)
from .handwriting import HELP as HANDWRITING_HELP
from .handwriting import MAX_STYLE_SCALE, HandwritingHandlers
from .models import DEFAULT_GUIDANCE, DEFAULT_STEPS, FEW_STEP, MAX_FEW_STEPS, SCHEDULER_NAMES, DemoModels
from .sketchpad import sketchpad
from .snippets import draw_snippet, forward_snippet, generate_snippet, watch_snippet

#: Generation requests let into the app at once. They only wait on the sampling worker, which merges them into
#: batched calls on the CPU's threads; more of them waiting means bigger batches under load.
GENERATE_CONCURRENCY = 32
#: Other events at once: streams of "Watch it denoise", forward-process previews.
DEFAULT_CONCURRENCY = 2
#: Requests waiting in the queue beyond those running; more are refused with a message.
QUEUE_SIZE = 128

INTRO = """# mnist-diffusion: diffusion you can watch
Small text- and class-conditioned diffusion models for handwritten digits, running on this machine's CPU.
Each tab shows the Python call (and the `mnist-diffusion` command) that does the same."""


def conditioning_inputs(
    prefix: str, class_choices: list[str], prompt: str, class_choice: str, optional: bool = False
) -> tuple[gr.Textbox, gr.Dropdown]:
    """A prompt box and a class dropdown, with element ids `{prefix}-prompt` and `{prefix}-class`."""
    suffix = " (optional)" if optional else ""
    return (
        gr.Textbox(prompt, label=f"Prompt{suffix}", elem_id=f"{prefix}-prompt"),
        gr.Dropdown(
            class_choices,
            value=class_choice,
            label=f"Class{suffix}",
            allow_custom_value=True,  # an unknown class gets the demo's own message, not Gradio's
            elem_id=f"{prefix}-class",
        ),
    )


def code_view(prefix: str, code: str) -> gr.Code:
    """The tab's equivalent Python (and CLI) code, element id `{prefix}-code`; long lines (the command) wrap."""
    return gr.Code(code, language="python", label="The same in Python", wrap_lines=True, elem_id=f"{prefix}-code")


def sampling_inputs(prefix: str, schedulers: list[str] | None = None) -> tuple[gr.Component, ...]:
    """
    Scheduler (the first of `schedulers` selected; the release's schedulers by default), steps, guidance and seed
    inputs, with element ids `{prefix}-...` for tests and styling.
    """
    schedulers = schedulers or list(SCHEDULER_NAMES)
    scheduler = gr.Radio(schedulers, value=schedulers[0], label="Scheduler", elem_id=f"{prefix}-scheduler")
    limits = f"1-{MAX_STEPS}" + (f"; few-step 1-{MAX_FEW_STEPS}" if FEW_STEP in schedulers else "")
    steps = gr.Number(DEFAULT_STEPS[schedulers[0]], label=f"Steps ({limits})", precision=0, elem_id=f"{prefix}-steps")
    default_guidance = DEFAULT_GUIDANCE[schedulers[0]]
    guidance = gr.Slider(
        0, MAX_GUIDANCE, default_guidance, step=0.05, label="Guidance scale", elem_id=f"{prefix}-guidance"
    )
    seed = gr.Number(0, label="Seed", precision=0, elem_id=f"{prefix}-seed")
    return scheduler, steps, guidance, seed


def build_demo(
    models: DemoModels | None = None, model: str | None = None, lora_recipe: LoraRecipe | None = None
) -> gr.Blocks:
    r"""
    The demo app, with its queue configured; `launch()` it, or serve it on a Hugging Face Space.

    Args:
        models ([`DemoModels`], *optional*): Already loaded models to share; loaded from `model` otherwise.
        model (`str`, *optional*): A pipeline folder or Hub repo id; the released model shipped with the package by
            default.
        lora_recipe ([`~mnist_diffusion.training.lora.LoraRecipe`], *optional*): The "Your handwriting" tab's
            training settings; the tab's `DEMO_RECIPE` by default.

    Example:

    ```py
    >>> from mnist_diffusion.demo import build_demo

    >>> build_demo().launch(server_name="127.0.0.1", server_port=7860)  # doctest: +SKIP
    ```
    """
    models = DemoModels(model) if models is None else models
    worker = SamplingWorker(models.samplers, read_images=models.read_images, by_steps={FEW_STEP: models.few_step})
    download_dir = Path(tempfile.mkdtemp(prefix="mnist-diffusion-demo-"))
    handlers = DemoHandlers(models, worker, download_dir)
    handwriting = HandwritingHandlers(models.pipes["DDPM"], download_dir, models.model, lora_recipe)
    with gr.Blocks(title="mnist-diffusion demo") as demo:
        gr.Markdown(INTRO)
        with gr.Tab("Generate", id="generate"):
            with gr.Row():
                with gr.Column():
                    prompt, class_choice = conditioning_inputs(
                        "gen", handlers.class_choices, "a thick slanted 7", NO_CLASS
                    )
                    preset = gr.Dropdown(
                        [NO_CLASS] + STYLE_PRESETS, value=NO_CLASS, label="Style preset", elem_id="gen-preset"
                    )
                    scheduler, steps, guidance, seed = sampling_inputs("gen", list(models.samplers))
                    count = gr.Number(16, label=f"Images (1-{MAX_IMAGES})", precision=0, elem_id="gen-count")
                    generate = gr.Button("Generate", variant="primary", elem_id="gen-button")
                with gr.Column():
                    grid = gr.Image(label="Grid", type="pil", format="png", interactive=False, elem_id="gen-grid")
                    summary = gr.Markdown(elem_id="gen-summary")
                    files = gr.File(label="Downloads (grid.png and each image)", height=260, elem_id="gen-files")
            first = next(iter(models.samplers))
            code = generate_snippet(
                "a thick slanted 7", None, first, DEFAULT_STEPS[first], DEFAULT_GUIDANCE[first], 0, 16, models.model
            )
            gen_code = code_view("gen", code)
        with gr.Tab("Watch it denoise", id="watch"):
            with gr.Row():
                with gr.Column():
                    watch_prompt, watch_class = conditioning_inputs(
                        "watch", handlers.class_choices, "a thick upright 4", NO_CLASS
                    )
                    watch_scheduler, watch_steps, watch_guidance, watch_seed = sampling_inputs("watch")
                    start = gr.Button("Start", variant="primary", elem_id="watch-button")
                with gr.Column():
                    with gr.Row():
                        x_t = gr.Image(
                            label="x_t (what the sampler sees)", format="png", interactive=False, elem_id="watch-xt"
                        )
                        x_0 = gr.Image(label="predicted x_0", format="png", interactive=False, elem_id="watch-x0")
                    reading = gr.Markdown(elem_id="watch-reading")
                    scrubber = gr.Slider(1, 20, 1, step=1, label="Step", interactive=False, elem_id="watch-slider")
            readings = gr.Dataframe(
                headers=["step", "timestep", "reads as", "confidence"],
                label="The classifier's reading of x_0",
                elem_id="watch-readings",
            )
            watch_code = code_view(
                "watch", watch_snippet("a thick upright 4", None, "DPM-Solver++", 20, 1.4, 0, models.model)
            )
            frames = gr.State([])
        with gr.Tab("The forward process", id="forward"):
            with gr.Row():
                with gr.Column():
                    source = gr.Dropdown(
                        handlers.digit_choices,
                        value=handlers.digit_choices[7],
                        label="Digit",
                        elem_id="forward-source",
                    )
                    sketch = sketchpad("…or draw one (then pick 'my drawing')", "forward-sketch")
                with gr.Column():
                    noise = gr.Slider(
                        0, 100, 50, step=1, label="Noise added (% of the forward process)", elem_id="forward-noise"
                    )
                    forward_seed = gr.Number(0, label="Noise seed", precision=0)
                    with gr.Row():
                        clean = gr.Image(label="x_0", format="png", interactive=False, elem_id="forward-clean")
                        noisy = gr.Image(label="x_t", format="png", interactive=False, elem_id="forward-noisy")
                        predicted = gr.Image(
                            label="predicted x_0 (the model's)",
                            format="png",
                            interactive=False,
                            elem_id="forward-predicted",
                        )
                    forward_info = gr.Markdown(elem_id="forward-info")
            forward_code = code_view("forward", forward_snippet("7", 50, 0))
        with gr.Tab("Draw", id="draw"):
            with gr.Row():
                with gr.Column():
                    drawing = sketchpad("Draw a digit (or part of one)", "draw-sketch")
                    mode = gr.Radio(list(DRAW_MODES), value="Image-to-image", label="Mode", elem_id="draw-mode")
                    mode_help = gr.Markdown(DRAW_MODE_HELP["Image-to-image"], elem_id="draw-mode-help")
                    strength = gr.Slider(
                        0.05, 1.0, 0.6, step=0.05, label=STRENGTH_LABELS["Image-to-image"], elem_id="draw-strength"
                    )
                    draw_prompt, draw_class = conditioning_inputs(
                        "draw", handlers.class_choices, "", NO_CLASS, optional=True
                    )
                    draw_scheduler, draw_steps, draw_guidance, draw_seed = sampling_inputs("draw")
                    draw_count = gr.Number(4, label=f"Images (1-{MAX_DRAW_IMAGES})", precision=0, elem_id="draw-count")
                    redraw = gr.Button("Turn it into digits", variant="primary", elem_id="draw-button")
                with gr.Column():
                    with gr.Row():
                        seen = gr.Image(
                            label="Your drawing, as the model sees it",
                            format="png",
                            interactive=False,
                            elem_id="draw-seen",
                        )
                        mask = gr.Image(
                            label="Mask (white: repainted)",
                            format="png",
                            interactive=False,
                            visible=False,  # inpainting only
                            elem_id="draw-mask",
                        )
                    redrawn = gr.Image(label="Results", format="png", interactive=False, elem_id="draw-result")
                    draw_summary = gr.Markdown(elem_id="draw-summary")
                    draw_files = gr.File(
                        label="Downloads (drawing.png, grid.png, each image)", height=260, elem_id="draw-files"
                    )
            draw_code = code_view(
                "draw", draw_snippet("img2img", None, None, 0.6, "DPM-Solver++", 20, 1.4, 0, 4, 1, models.model)
            )

        with gr.Tab("Your handwriting", id="handwriting"):
            gr.Markdown(HANDWRITING_HELP)
            with gr.Row():
                with gr.Column():
                    hw_digit = gr.Radio(handwriting.class_names, label="This drawing is a …", elem_id="hw-digit")
                    hw_sketch = sketchpad("Draw one digit", "hw-sketch")
                    hw_add = gr.Button("Add drawing", elem_id="hw-add")
                    hw_upload = gr.File(
                        label="…or upload images named by their digit (3_a.png)",
                        file_count="multiple",
                        file_types=["image"],
                        elem_id="hw-upload",
                    )
                with gr.Column():
                    hw_gallery = gr.Gallery(label="Your digits", columns=10, height=200, elem_id="hw-gallery")
                    hw_status = gr.Markdown(handwriting.collected([]), elem_id="hw-status")
                    with gr.Row():
                        hw_clear = gr.Button("Clear", elem_id="hw-clear")
                        hw_learn = gr.Button("Learn my style", variant="primary", elem_id="hw-learn")
                    hw_grid = gr.Image(
                        label="Every digit in your style", format="png", interactive=False, elem_id="hw-grid"
                    )
                    hw_scale = gr.Slider(
                        0, MAX_STYLE_SCALE, 1.0, step=0.05, label="Style strength (LoRA scale)", elem_id="hw-scale"
                    )
                    hw_summary = gr.Markdown(elem_id="hw-summary")
                    hw_file = gr.File(label="Your adapter (zip)", elem_id="hw-file")
            hw_code = code_view("hw", handwriting.code())
            hw_examples, hw_style = gr.State([]), gr.State()

        generate_inputs = [prompt, class_choice, scheduler, steps, guidance, seed, count]
        generate.click(
            handlers.generate,
            generate_inputs,
            [grid, files, summary, gen_code],
            api_name="generate",
            concurrency_limit=GENERATE_CONCURRENCY,
        )
        scheduler.input(handlers.default_settings, scheduler, [steps, guidance], api_name=False)
        preset.input(handlers.apply_preset, [preset, class_choice, prompt], prompt, api_name=False)
        watch_inputs = [watch_prompt, watch_class, watch_scheduler, watch_steps, watch_guidance, watch_seed]
        start.click(
            handlers.watch, watch_inputs, [x_t, x_0, reading, readings, scrubber, frames, watch_code], api_name="watch"
        )
        scrubber.input(handlers.scrub, [frames, scrubber], [x_t, x_0, reading], api_name=False)
        forward_inputs = [source, sketch, noise, forward_seed]
        forward_outputs = [clean, noisy, predicted, forward_info, forward_code]
        for event in (noise.change, source.change, forward_seed.change):
            event(handlers.forward, forward_inputs, forward_outputs, api_name=False)
        draw_inputs = [drawing, mode, draw_prompt, draw_class, strength, draw_scheduler, draw_steps, draw_guidance]
        redraw.click(
            handlers.draw,
            draw_inputs + [draw_seed, draw_count],
            [seen, mask, redrawn, draw_files, draw_summary, draw_code],
            api_name="draw",
        )
        mode.change(handlers.draw_mode, mode, [strength, mode_help, mask], api_name=False)
        hw_add.click(
            handwriting.add_drawing,
            [hw_examples, hw_sketch, hw_digit],
            [hw_examples, hw_gallery, hw_status],
            api_name="add_drawing",
        ).success(handwriting.blank_pad, None, hw_sketch, api_name=False)  # a refusal leaves the drawing
        hw_upload.upload(
            handwriting.add_uploads,
            [hw_examples, hw_upload],
            [hw_examples, hw_gallery, hw_upload, hw_status],
            api_name="add_uploads",
        )
        hw_clear.click(handwriting.clear, None, [hw_examples, hw_gallery, hw_status], api_name=False)
        hw_learn.click(
            handwriting.learn,
            [hw_examples, hw_scale],
            [hw_style, hw_grid, hw_file, hw_summary, hw_code],
            api_name="learn_style",
            concurrency_limit=1,  # one training at a time: the others wait in the queue, their place shown
        )
        hw_scale.input(handwriting.restyle, [hw_style, hw_scale], [hw_grid, hw_code], api_name="restyle")
        demo.load(handlers.forward, forward_inputs, forward_outputs, api_name="forward")
    demo.queue(default_concurrency_limit=DEFAULT_CONCURRENCY, max_size=QUEUE_SIZE)
    demo.sampling_worker = worker
    return demo


def launch(port: int = 7860, host: str = "127.0.0.1", model: str | None = None, threads: int | None = 2) -> gr.Blocks:
    r"""
    Build the demo and serve it at `http://{host}:{port}` until interrupted.

    Args:
        port (`int`, defaults to 7860): The port.
        host (`str`, defaults to `"127.0.0.1"`): The address to listen on (`"0.0.0.0"` to serve the network).
        model (`str`, *optional*): A pipeline folder or Hub repo id; the released model by default.
        threads (`int`, *optional*, defaults to 2): torch's CPU threads (None keeps torch's default).

    Example:

    ```py
    >>> from mnist_diffusion.demo import launch

    >>> launch(port=7860)  # doctest: +SKIP
    ```
    """
    if threads is not None:
        torch.set_num_threads(threads)
    demo = build_demo(model=model)
    demo.launch(server_name=host, server_port=port)
    return demo
