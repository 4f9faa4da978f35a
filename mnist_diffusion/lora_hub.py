"""LoRA adapters by folder or repo id: loading several onto a pipeline, their Hub model card, pushing one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import CommitOperationAdd, HfApi, ModelCard, ModelCardData

from .model_card import SAMPLES_FILE, read_json_file, sample_grid
from .pretrained import DIFFUSION_MODEL
from .training.run_folder import TRAINING_ARGS_FILE

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo

    from .pipelines import MnistDiffusionPipeline

#: diffusers' LoRA weights file (`load_lora_weights` looks for it).
LORA_WEIGHTS_FILE = "pytorch_lora_weights.safetensors"
LORA_TAGS = ["lora", "diffusers", "template:sd-lora", "mnist-diffusion", "text-to-image"]
_BUNDLED_BASE = "mnist-diffusion (bundled release)"


def is_lora_folder(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder holding a LoRA adapter (diffusers' weights file) rather than a whole pipeline."""
    path = Path(path)
    return (path / LORA_WEIGHTS_FILE).is_file() and not (path / "model_index.json").is_file()


def load_lora_adapters(
    pipeline: MnistDiffusionPipeline, sources: list[str], scales: list[float] | None = None
) -> list[str]:
    r"""
    Load the LoRA adapters `sources` (folders or Hub repo ids) onto `pipeline` as `lora_0`, `lora_1`, ... and blend
    them with `set_adapters`: `scales` holds one weight for all adapters or one per adapter (default 1.0). Returns the
    adapter names.

    Example:

    ```py
    >>> load_lora_adapters(pipe, ["outputs/my-handwriting", "user/dotted-digits"], [0.8, 0.5])  # doctest: +SKIP
    ['lora_0', 'lora_1']
    ```
    """
    scales = list(scales or [1.0])
    if len(scales) not in (1, len(sources)):
        raise ValueError(
            f"Got {len(scales)} LoRA scales for {len(sources)} adapters; expected one scale for all or one each."
        )
    names = [f"lora_{i}" for i in range(len(sources))]
    for source, name in zip(sources, names, strict=True):
        pipeline.load_lora_weights(source, adapter_name=name)
    pipeline.set_adapters(names, adapter_weights=scales * len(names) if len(scales) == 1 else scales)
    return names


def describe_base_model(base_model: str | os.PathLike) -> str:
    r"""
    How an adapter's card names its base model: a Hub repo id as it is, the package's bundled release as
    `"mnist-diffusion (bundled release)"`, another local folder by its absolute path.

    Example:

    ```py
    >>> from mnist_diffusion.lora_hub import describe_base_model
    >>> from mnist_diffusion.pretrained import DIFFUSION_MODEL

    >>> describe_base_model(DIFFUSION_MODEL), describe_base_model("user/mnist-diffusion")
    ('mnist-diffusion (bundled release)', 'user/mnist-diffusion')
    ```
    """
    path = Path(base_model)
    if path.exists():
        return _BUNDLED_BASE if path.resolve() == DIFFUSION_MODEL.resolve() else str(path.resolve())
    return str(base_model)


def _is_repo_id(name: str) -> bool:
    """Whether `name` has the form of a Hub repo id (`user/name`), which the card's `base_model` metadata needs."""
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not Path(name).exists() and " " not in name


def render_lora_card(
    base_model: str,
    repo_id: str,
    instance_prompt: str | None = None,
    training_args: dict[str, Any] | None = None,
    samples_caption: str | None = None,
) -> ModelCard:
    r"""
    The model card of a LoRA adapter: `base_model`, `tags` with `lora`, `instance_prompt` and a `widget` showing
    `samples.png` in the metadata (the Hub's LoRA conventions), and how to load it in the text.

    Args:
        base_model (`str`): The base model, as [`describe_base_model`] names it.
        repo_id (`str`): The adapter's Hub repo (or folder), for the usage snippet and the title.
        instance_prompt (`str`, *optional*): The prompt the adapter was trained with (its trigger words), if any.
        training_args (`dict`, *optional*): training/train_lora.py's arguments, summarised on the card.
        samples_caption (`str`, *optional*): Caption of `samples.png`; the image is shown only when given.

    Example:

    ```py
    >>> from mnist_diffusion.lora_hub import render_lora_card

    >>> card = render_lora_card("user/mnist-diffusion", "user/my-handwriting", instance_prompt="in my handwriting")
    >>> card.data.base_model, "lora" in card.data.tags
    ('user/mnist-diffusion', True)
    ```
    """
    prompt = instance_prompt or ""
    card_data = ModelCardData(
        library_name="diffusers",
        pipeline_tag="text-to-image",
        license="apache-2.0",
        base_model=base_model if _is_repo_id(base_model) else None,
        base_model_relation="adapter" if _is_repo_id(base_model) else None,
        tags=list(LORA_TAGS),
        instance_prompt=instance_prompt,
        widget=[{"text": prompt, "output": {"url": SAMPLES_FILE}}] if samples_caption else None,
        mnist_diffusion_lora={"base_model": base_model, "samples_caption": samples_caption},
    )
    name = repo_id.split("/")[-1]
    args = training_args or {}
    settings = ", ".join(
        f"{key} {args[key]}"
        for key in (
            "rank",
            "lora_alpha",
            "target_modules",
            "max_train_steps",
            "learning_rate",
            "with_prior_preservation",
        )
        if key in args
    )
    trigger = (
        f'Trained with the instance prompt "{instance_prompt}"; its words are optional when generating.'
        if instance_prompt
        else "Trained without a prompt: class labels alone draw the digits in this style."
    )
    samples = f"\n![{samples_caption}]({SAMPLES_FILE})\n\n{samples_caption}\n" if samples_caption else ""
    content = f"""---
{card_data.to_yaml()}
---

# {name}

A LoRA adapter (diffusers' `pytorch_lora_weights.safetensors`) for the mnist-diffusion model `{base_model}`, trained
with `training/train_lora.py` of [mnist-diffusion](https://github.com/mnist-diffusion). {trigger}
{samples}
## Use it

```py
from mnist_diffusion import MnistDiffusionPipeline

pipe = MnistDiffusionPipeline.from_pretrained(BASE)  # the base model above
pipe.load_lora_weights("{repo_id}", adapter_name="{name}")
images = pipe(class_labels=list(range(10)), cross_attention_kwargs={{"scale": 1.0}}).images
```

or `mnist-diffusion generate --lora {repo_id} --lora-scale 1.0 ...`; without this package,
`DiffusionPipeline.from_pretrained(BASE, trust_remote_code=True).load_lora_weights("{repo_id}")` on a base pushed with
`mnist-diffusion push`. The adapter only fits the base model it was trained on (the same UNet shapes).

## Training

{settings or "See training_args.json."}
"""
    return ModelCard(content)


def write_lora_card(
    folder: str | os.PathLike,
    base_model: str | os.PathLike,
    pipeline: MnistDiffusionPipeline | None = None,
    instance_prompt: str | None = None,
    training_args: dict[str, Any] | None = None,
    sample_steps: int = 50,
) -> ModelCard:
    r"""
    Write `README.md` (the adapter's card) into the adapter `folder` and, given the `pipeline` with the adapter
    loaded, `samples.png` (one digit per class); returns the card.

    Example:

    ```py
    >>> pipe.load_lora_weights("outputs/my-handwriting")  # doctest: +SKIP
    >>> write_lora_card("outputs/my-handwriting", "user/mnist-diffusion", pipe)  # doctest: +SKIP
    ```
    """
    folder = Path(folder)
    caption = None
    if pipeline is not None:
        grid, caption = sample_grid(pipeline, num_inference_steps=sample_steps)
        grid.save(folder / SAMPLES_FILE)
    card = render_lora_card(describe_base_model(base_model), folder.name, instance_prompt, training_args, caption)
    card.save(folder / "README.md")
    return card


def push_lora_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
) -> CommitInfo:
    r"""
    Upload a LoRA adapter folder (weights, `README.md` card, `samples.png`, `training_args.json`) to the Hub repo
    `repo_id` in one commit; the repo is created if needed. `pipe.load_lora_weights(repo_id)` then loads it.

    Example:

    ```py
    >>> from mnist_diffusion.lora_hub import push_lora_to_hub

    >>> push_lora_to_hub("outputs/my-handwriting", "user/my-handwriting")  # doctest: +SKIP
    ```
    """
    from .hub import prepare_repo, resolve_token

    folder = Path(folder)
    if not is_lora_folder(folder):
        raise ValueError(f"{folder} is not a LoRA adapter folder; expected {LORA_WEIGHTS_FILE} in it.")
    if not (folder / "README.md").is_file():
        raise ValueError(
            f"{folder} has no README.md model card; write one with `write_lora_card` (train_lora.py does)."
        )
    written = ModelCard.load(folder / "README.md").data.to_dict()
    inputs = written.get("mnist_diffusion_lora") or {}
    if not inputs.get("base_model"):
        raise ValueError(
            f"{folder / 'README.md'} does not name the adapter's base model; rewrite it with `write_lora_card`."
        )
    api = HfApi(token=resolve_token(token))
    repo_id = prepare_repo(api, repo_id, private, revision)
    training_args = read_json_file(folder / TRAINING_ARGS_FILE)
    card = render_lora_card(
        inputs["base_model"], repo_id, written.get("instance_prompt"), training_args, inputs.get("samples_caption")
    )
    operations = [CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=str(card).encode("utf-8"))]
    operations += [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name))
        for name in (LORA_WEIGHTS_FILE, SAMPLES_FILE, TRAINING_ARGS_FILE)
        if (folder / name).is_file()
    ]
    return api.create_commit(
        repo_id,
        operations,
        commit_message=commit_message or "Upload LoRA adapter",
        revision=revision,
        create_pr=create_pr,
    )
