"""Render a pipeline's Hub model card (README.md) and sample grid from the `model_card_template.md` template."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from diffusers.utils import make_image_grid
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from PIL import Image

from .text_encoding import DIGIT_WORDS

if TYPE_CHECKING:  # the pipelines import this module (save_pretrained with push_to_hub), never the other way round
    from .pipelines import MnistDiffusionPipeline

#: The Jinja template shipped with the package; pass `template_path` to use another one.
DEFAULT_TEMPLATE_PATH = Path(__file__).resolve().parent / "model_card_template.md"
SAMPLES_FILE = "samples.png"
_SAMPLE_UPSCALE = 4


def read_json_file(path: str | Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or `None` when there is no such file; `ValueError` if it is not a JSON object."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); expected a JSON object.") from error
    if not isinstance(content, dict):
        raise ValueError(f"{path} holds a {type(content).__name__}; expected a JSON object.")
    return content


def _check_eval_results(eval_results: dict[str, Any]) -> None:
    """`ValueError` unless `eval_results` is `{"dataset": str, "split": str, "metrics": {name: number}}`."""
    metrics = eval_results.get("metrics")
    if (
        not isinstance(eval_results.get("dataset"), str)
        or not isinstance(eval_results.get("split"), str)
        or not isinstance(metrics, dict)
        or not metrics
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values())
    ):
        raise ValueError(
            f"Evaluation results {eval_results!r} are malformed; expected "
            '{"dataset": "ylecun/mnist", "split": "test", "metrics": {"fid": 4.2, ...}} with numeric metrics.'
        )


def sample_grid(
    pipeline: MnistDiffusionPipeline, num_inference_steps: int = 50, seed: int = 0
) -> tuple[Image.Image, str]:
    r"""
    One sample per class (up to 10), or per digit prompt for a text-only model, as one upscaled row, and its caption.

    Example:

    ```py
    >>> grid, caption = sample_grid(pipe, num_inference_steps=50)  # doctest: +SKIP
    >>> grid.save("samples.png")  # doctest: +SKIP
    ```
    """
    generator = torch.Generator().manual_seed(seed)
    if pipeline.num_classes:
        labels = list(range(min(pipeline.num_classes, 10)))
        images = pipeline(class_labels=labels, num_inference_steps=num_inference_steps, generator=generator).images
        names = [pipeline.label_names[i] for i in labels] if pipeline.label_names else [str(i) for i in labels]
        caption = f"One sample per class: {', '.join(names)}"
    else:
        prompts = [f"a handwritten {word}" for word in DIGIT_WORDS]
        images = pipeline(prompt=prompts, num_inference_steps=num_inference_steps, generator=generator).images
        caption = 'One sample per prompt, "a handwritten zero" to "a handwritten nine"'
    images = [
        image.resize((image.width * _SAMPLE_UPSCALE, image.height * _SAMPLE_UPSCALE), Image.NEAREST)
        for image in images
    ]
    caption += f" (left to right; {num_inference_steps} denoising steps, seed {seed})."
    return make_image_grid(images, rows=1, cols=len(images)), caption


def render_model_card(
    pipeline: MnistDiffusionPipeline,
    repo_id: str,
    *,
    revision: str | None = None,
    training_args: dict[str, Any] | None = None,
    eval_results: dict[str, Any] | None = None,
    samples_caption: str | None = None,
    license: str = "apache-2.0",
    template_path: str | Path = DEFAULT_TEMPLATE_PATH,
) -> ModelCard:
    r"""
    The model card of `pipeline` for the Hub repo `repo_id`, rendered from `template_path`.

    Args:
        pipeline ([`MnistDiffusionPipeline`]): The pipeline the card describes (its components and classes).
        repo_id (`str`): Where it is pushed; used in the usage snippets and as the model name.
        revision (`str`, *optional*): The branch it is pushed to, shown in the snippets when not `main`.
        training_args (`dict`, *optional*): The training script's arguments (`training_args.json`); their
            `dataset_name` goes into the `datasets` metadata.
        eval_results (`dict`, *optional*): `{"dataset": ..., "split": ..., "metrics": {name: value}}`
            (`eval_results.json`), shown in a table and as `model-index` metadata.
        samples_caption (`str`, *optional*): Caption of `samples.png`; the image is shown only when given.
        license (`str`, defaults to `"apache-2.0"`): The license identifier in the metadata.
        template_path (`str` or `Path`): A Jinja template; defaults to `model_card_template.md` in this package.

    Example:

    ```py
    >>> from huggingface_hub import ModelCard

    >>> card = render_model_card(pipe, "user/mnist-diffusion", eval_results={"dataset": "ylecun/mnist", "split":
    ...     "test", "metrics": {"fid": 4.2}})  # doctest: +SKIP
    >>> card.data.library_name  # doctest: +SKIP
    'diffusers'
    ```
    """
    if not Path(template_path).is_file():
        raise ValueError(f"Model card template {template_path} does not exist; expected a Markdown/Jinja file.")
    has_text, num_classes = pipeline.text_encoder is not None, pipeline.num_classes
    pipeline_tag = "text-to-image" if has_text else "unconditional-image-generation"
    conditioning = "- and ".join(["text"] * has_text + ["class"] * bool(num_classes)) + "-conditioned"
    if eval_results is not None:
        _check_eval_results(eval_results)
    dataset = (training_args or {}).get("dataset_name") or (eval_results or {}).get("dataset")
    card_data = ModelCardData(
        library_name="diffusers",
        pipeline_tag=pipeline_tag,
        license=license,
        datasets=[dataset] if dataset else None,
        tags=["diffusers", "mnist-diffusion", "diffusion"]
        + ["text-to-image"] * has_text
        + ["class-conditional"] * bool(num_classes),
        model_name=repo_id.split("/")[-1],
        eval_results=[
            EvalResult(
                task_type=pipeline_tag,
                dataset_type=eval_results["dataset"],
                dataset_name=eval_results["dataset"],
                dataset_split=eval_results["split"],
                metric_type=name,
                metric_value=value,
            )
            for name, value in eval_results["metrics"].items()
        ]
        if eval_results
        else None,
    )
    components = [
        {
            "name": name,
            "class_name": type(component).__name__,
            "parameters": f"{sum(p.numel() for p in component.parameters()):,}"
            if isinstance(component, torch.nn.Module)
            else "-",
        }
        for name, component in pipeline.components.items()
        if component is not None
    ]
    label_names = pipeline.label_names or []
    if num_classes:
        first = label_names[0] if label_names else "0"
        usage_call = f'images = pipe(class_labels=["{first}"], generator=torch.Generator().manual_seed(0)).images'
        cli_example = f"--class-label {first}"
    else:
        usage_call = 'images = pipe("a thick slanted seven", generator=torch.Generator().manual_seed(0)).images'
        cli_example = '"a thick slanted seven"'
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path),
        repo_id=repo_id,
        model_name=repo_id.split("/")[-1],
        revision_argument=f', revision="{revision}"' if revision and revision != "main" else "",
        conditioning=conditioning,
        image_size=pipeline.unet.config.sample_size,
        color="grayscale" if pipeline.unet.config.in_channels == 1 else "RGB",
        has_samples=samples_caption is not None,
        samples_file=SAMPLES_FILE,
        samples_caption=samples_caption,
        usage_call=usage_call,
        cli_example=cli_example,
        components=components,
        class_names=", ".join(label_names),
        training_args=[(k, json.dumps(v) if not isinstance(v, str) else v) for k, v in (training_args or {}).items()],
        eval_metrics=list(eval_results["metrics"].items()) if eval_results else [],
        eval_dataset=(eval_results or {}).get("dataset"),
        eval_split=(eval_results or {}).get("split"),
    )
