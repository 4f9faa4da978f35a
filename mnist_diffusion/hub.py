"""Share pipelines on the Hugging Face Hub: push with a model card and community code, load back by repo id."""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from huggingface_hub import (
    CommitInfo,
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    constants,
    get_token,
    snapshot_download,
)
from huggingface_hub.errors import LocalEntryNotFoundError

from .community_code import COMMUNITY_MODULES, export_community_code, is_community_layout, package_class
from .model_card import SAMPLES_FILE, read_json_file, render_model_card, sample_grid
from .training.run_folder import EVAL_RESULTS_FILE, TRAINING_ARGS_FILE

if TYPE_CHECKING:  # the pipelines import this module (from_pretrained, push_to_hub), never the other way round
    from .pipelines import MnistDiffusionPipeline

CHECKPOINTS_FOLDER = "checkpoints"
VARIANT_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
#: Libraries whose classes a community-layout `model_index.json` may name besides the uploaded code.
LOADABLE_LIBRARIES = ("diffusers", "transformers")
DOWNLOAD_KWARGS = ("revision", "token", "cache_dir", "force_download", "local_files_only")
#: `from_pretrained` options passed on to every model component, as diffusers' pipeline loader passes them.
MODEL_LOADING_KWARGS = ("low_cpu_mem_usage", "use_safetensors")
#: Where pushes stage the files of their commit, one `<pid>-<id>` folder each; a push removes the folders of
#: processes that no longer run (a killed push leaves its staging folder, full weights included, until then).
STAGING_ROOT = Path(tempfile.gettempdir()) / "mnist-diffusion-push"


def resolve_token(token: str | bool | None) -> str:
    """The Hub token to write with: `token`, else `HF_TOKEN` or `hf auth login`'s; `ValueError` when there is none."""
    token = get_token() if token is None or token is True else token
    if not token:
        raise ValueError(
            "No Hugging Face token found; expected the HF_TOKEN environment variable or a token saved with "
            "`hf auth login` (a token with write access)."
        )
    return token


def normalize_subfolder(subfolder: str | None) -> str:
    """`subfolder` as a relative repo path without surrounding slashes ("" for the root); refuses `..` and `.`."""
    parts = [part for part in (subfolder or "").replace("\\", "/").split("/") if part]
    if any(part in (".", "..") for part in parts):
        raise ValueError(f"`subfolder` is {subfolder!r}; expected a folder path inside the repo, without '.' or '..'.")
    return "/".join(parts)


def _process_is_running(pid: int) -> bool:
    """Whether a process `pid` exists (one of another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _staging_folder() -> Path:
    """A new staging folder under [`STAGING_ROOT`], after removing those left by pushes that were killed."""
    STAGING_ROOT.mkdir(parents=True, exist_ok=True)
    for folder in STAGING_ROOT.iterdir():
        pid = folder.name.split("-", 1)[0]
        if pid.isdigit() and not _process_is_running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
    folder = STAGING_ROOT / f"{os.getpid()}-{uuid.uuid4().hex}"
    folder.mkdir()
    return folder


def _commit_folder(
    api: HfApi,
    folder: Path,
    repo_id: str,
    *,
    path_in_repo: str = "",
    revision: str | None,
    commit_message: str,
    create_pr: bool,
    delete_missing: bool,
) -> CommitInfo:
    """Upload every file of `folder` under `path_in_repo` in one commit (atomic on the Hub); deletes only if asked."""
    prefix = f"{path_in_repo.strip('/')}/" if path_in_repo.strip("/") else ""
    operations: list = [
        CommitOperationAdd(path_in_repo=prefix + path.relative_to(folder).as_posix(), path_or_fileobj=str(path))
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    ]
    if delete_missing:
        uploaded = {op.path_in_repo for op in operations}
        remote = api.list_repo_files(repo_id, revision=revision)
        operations += [
            CommitOperationDelete(path_in_repo=path)
            for path in remote
            if path.startswith(prefix) and path not in uploaded and path != ".gitattributes"
        ]
    return api.create_commit(
        repo_id, operations, commit_message=commit_message, revision=revision, create_pr=create_pr
    )


def _copy_companion_models(source_dir: Path, folder: Path) -> None:
    """Copy the model folders of `source_dir` that are not pipeline components (a `config.json` and safetensors
    weights, e.g. `unet_1step`) into the staged `folder`, so a push keeps them beside the pipeline."""
    if not (source_dir / "model_index.json").is_file():
        return
    components = set(json.loads((source_dir / "model_index.json").read_text(encoding="utf-8")))
    for child in sorted(source_dir.iterdir()):
        weights = sorted(child.glob("*.safetensors")) if child.is_dir() else []
        if child.name in components or not weights or not (child / "config.json").is_file():
            continue
        (folder / child.name).mkdir(parents=True, exist_ok=True)
        for path in [child / "config.json", *weights]:
            shutil.copy2(path, folder / child.name / path.name)


def prepare_repo(api: HfApi, repo_id: str, private: bool | None, revision: str | None) -> str:
    """Create the repo (and the branch `revision`) if needed; returns the full repo id."""
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if revision is not None and revision != "main":
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    return repo_id


def _save_variant(
    pipeline: MnistDiffusionPipeline, folder: Path, variant: str, safe_serialization: bool, scratch: Path
) -> None:
    """Add `<weights>.<variant>.<ext>` of every model of `pipeline` to its saved `folder` (configs untouched)."""
    with tempfile.TemporaryDirectory(dir=scratch) as variant_dir:
        for name, component in pipeline.components.items():
            if isinstance(component, torch.nn.Module):
                copy.deepcopy(component).to(VARIANT_DTYPES[variant]).save_pretrained(
                    Path(variant_dir) / name, variant=variant, safe_serialization=safe_serialization
                )
                for weights in (Path(variant_dir) / name).glob(f"*.{variant}.*"):
                    shutil.copy2(weights, folder / name / weights.name)


def push_pipeline_to_hub(
    pipeline: MnistDiffusionPipeline | str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    variant: str | None = None,
    safe_serialization: bool = True,
    subfolder: str | None = None,
    delete_missing: bool = False,
    training_args: dict[str, Any] | None = None,
    eval_results: dict[str, Any] | None = None,
    samples: bool = True,
    sample_steps: int = 50,
    license: str = "apache-2.0",
) -> CommitInfo:
    r"""
    Upload a pipeline to the Hub in one commit: weights, configs, community code, model card, samples.

    The repo gets what `save_pretrained` writes, with `model_index.json` in diffusers' community-components layout
    and the package's own source files beside it (see [`~mnist_diffusion.community_code.export_community_code`]),
    so `DiffusionPipeline.from_pretrained(repo_id, trust_remote_code=True)` works without this package and
    `MnistDiffusionPipeline.from_pretrained(repo_id)` with it. The commit is atomic: an interrupted push leaves the
    repo as it was. Files already in the repo and not part of the push (checkpoints, the user's own files) are
    kept, unless `delete_missing=True`. The files are staged in a folder of [`STAGING_ROOT`]; one left by a killed
    push is removed by the next push.

    Args:
        pipeline ([`MnistDiffusionPipeline`], `str` or `os.PathLike`): The pipeline, or a folder it was saved to
            (its `training_args.json` and `eval_results.json` are then picked up, and so are extra model folders
            beside its components, such as the UNet of each step count in `mnist-diffusion-fast`).
        repo_id (`str`): `"user/name"`; created if needed.
        token (`str`, *optional*): Defaults to `HF_TOKEN` or the token saved by `hf auth login`; `ValueError`
            before any work when there is none.
        private (`bool`, *optional*): Visibility of a newly created repo (an existing repo keeps its own).
        revision (`str`, *optional*): Branch to push to, created from `main` if needed; defaults to `main`.
        commit_message (`str`, *optional*): Defaults to `"Upload MnistDiffusionPipeline"`.
        create_pr (`bool`, defaults to `False`): Open a pull request instead of committing to the branch.
        variant (`str`, *optional*): Also upload `"fp16"` or `"bf16"` copies of the weights, loaded with
            `from_pretrained(repo_id, variant="fp16", dtype=torch.float16)`.
        safe_serialization (`bool`, defaults to `True`): Weights as safetensors; `False` uploads PyTorch pickles
            (`*.bin`) of the diffusers components, as diffusers' `push_to_hub` does (transformers 5 saves the text
            encoder as safetensors whatever it is asked).
        subfolder (`str`, *optional*): Put the pipeline in this folder of the repo (load it with
            `from_pretrained(repo_id, subfolder=...)`). As with diffusers' `push_to_hub`, no model card is written
            then: the repo's `README.md` belongs to its root.
        delete_missing (`bool`, defaults to `False`): Delete the repo's files (under `subfolder`, if given) that this
            push does not contain (except `.gitattributes`), in the same commit.
        training_args (`dict`, *optional*): Training arguments for the card; defaults to `training_args.json` in the
            pipeline's folder.
        eval_results (`dict`, *optional*): `{"dataset": ..., "split": ..., "metrics": {...}}` for the card; defaults
            to `eval_results.json` in the pipeline's folder.
        samples (`bool`, defaults to `True`): Generate `samples.png` (one image per class or digit prompt).
        sample_steps (`int`, defaults to 50): Denoising steps for the samples.
        license (`str`, defaults to `"apache-2.0"`): License in the card's metadata.

    Returns:
        [`~huggingface_hub.CommitInfo`]: the commit (its `oid`, `commit_url`, and `pr_url` with `create_pr=True`).

    Example:

    ```py
    >>> from mnist_diffusion.hub import push_pipeline_to_hub

    >>> commit = push_pipeline_to_hub("outputs/mnist-text", "user/mnist-diffusion", variant="fp16")  # doctest: +SKIP
    >>> commit.oid  # doctest: +SKIP
    ```
    """
    if variant is not None and variant not in VARIANT_DTYPES:
        raise ValueError(f"Unknown variant {variant!r}; expected one of {sorted(VARIANT_DTYPES)} or None.")
    subfolder = normalize_subfolder(subfolder)
    token = resolve_token(token)
    if isinstance(pipeline, (str, os.PathLike)):
        pipeline = _load_saved_pipeline(Path(pipeline))
    source_dir = pipeline.config.get("_name_or_path")
    if source_dir and os.path.isdir(source_dir):
        training_args = (
            training_args if training_args is not None else read_json_file(Path(source_dir) / TRAINING_ARGS_FILE)
        )
        eval_results = (
            eval_results if eval_results is not None else read_json_file(Path(source_dir) / EVAL_RESULTS_FILE)
        )
    api = HfApi(token=token)
    scratch = _staging_folder()
    try:
        staging = scratch / "repo"
        folder = staging / subfolder
        pipeline.save_pretrained(folder, safe_serialization=safe_serialization)
        if source_dir and os.path.isdir(source_dir):
            _copy_companion_models(Path(source_dir), folder)
        if variant is not None:
            _save_variant(pipeline, folder, variant, safe_serialization, scratch)
        export_community_code(folder)
        for name, content in ((TRAINING_ARGS_FILE, training_args), (EVAL_RESULTS_FILE, eval_results)):
            if content is not None:
                (folder / name).write_text(json.dumps(content, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        caption = None
        if samples:
            grid, caption = sample_grid(pipeline, num_inference_steps=sample_steps)
            grid.save(folder / SAMPLES_FILE)
        repo_id = prepare_repo(api, repo_id, private, revision)
        if not subfolder:
            card = render_model_card(
                pipeline,
                repo_id,
                revision=revision,
                training_args=training_args,
                eval_results=eval_results,
                samples_caption=caption,
                license=license,
            )
            card.save(folder / "README.md")
        return _commit_folder(
            api,
            folder,
            repo_id,
            path_in_repo=subfolder,
            revision=revision,
            commit_message=commit_message or f"Upload {type(pipeline).__name__}",
            create_pr=create_pr,
            delete_missing=delete_missing,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _load_saved_pipeline(folder: Path) -> MnistDiffusionPipeline:
    """The pipeline saved in `folder`, loaded with the class its `model_index.json` names (looked up in the package's
    pipelines by name, as diffusers' `DiffusionPipeline.from_pretrained` looks up its own)."""
    if not (folder / "model_index.json").is_file():
        raise ValueError(f"{folder} is not a saved pipeline; expected a folder with a model_index.json.")
    class_name = read_json_file(folder / "model_index.json").get("_class_name")
    pipeline_class = getattr(importlib.import_module("mnist_diffusion.pipelines"), str(class_name), None)
    if not isinstance(pipeline_class, type):
        raise ValueError(
            f"{folder}/model_index.json names the pipeline class {class_name!r}; expected one of "
            "mnist_diffusion.pipelines (MnistDiffusionPipeline, MnistImg2ImgPipeline, MnistInpaintPipeline)."
        )
    return pipeline_class.from_pretrained(folder)


def push_checkpoint(
    checkpoint_dir: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
) -> CommitInfo:
    r"""
    Upload a training checkpoint folder to `checkpoints/<folder name>/` of a Hub repo, in one commit.

    The rest of the repo (the pipeline, other checkpoints) is left untouched, so a training run can push its
    checkpoints next to the pipeline it pushes at the end.

    Example:

    ```py
    >>> from mnist_diffusion.hub import push_checkpoint

    >>> push_checkpoint("outputs/mnist-text/checkpoint-5000", "user/mnist-diffusion")  # doctest: +SKIP
    ```
    """
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir() or not any(path.is_file() for path in checkpoint_dir.rglob("*")):
        raise ValueError(f"Checkpoint folder {checkpoint_dir} does not exist or is empty; expected saved state files.")
    api = HfApi(token=resolve_token(token))
    repo_id = prepare_repo(api, repo_id, private, revision)
    return _commit_folder(
        api,
        checkpoint_dir,
        repo_id,
        path_in_repo=f"{CHECKPOINTS_FOLDER}/{checkpoint_dir.name}",
        revision=revision,
        commit_message=commit_message or f"Upload {checkpoint_dir.name}",
        create_pr=False,
        delete_missing=False,
    )


def _load_component(
    component_class: type, folder: Path, name: str, dtype: torch.dtype | None, variant: str | None, options: dict
) -> Any:
    """Load one component from `folder/name` with `component_class` (dtype, variant and `options` for models only)."""
    kwargs: dict[str, Any] = {"subfolder": name}
    if issubclass(component_class, torch.nn.Module):
        kwargs.update(options)
        if dtype is not None:
            kwargs["dtype"] = dtype
        if variant is not None and any((folder / name).glob(f"*.{variant}.*")):
            kwargs["variant"] = variant
    return component_class.from_pretrained(folder, **kwargs)


def _load_community_layout(
    pipeline_class: type[MnistDiffusionPipeline],
    folder: Path,
    model_index: dict[str, Any],
    dtype: torch.dtype | None = None,
    variant: str | None = None,
    **kwargs,
) -> MnistDiffusionPipeline:
    """Build a pipeline from a community-layout folder with the installed classes; `kwargs` replace components."""
    options = {key: kwargs.pop(key) for key in MODEL_LOADING_KWARGS if key in kwargs}
    expected_modules, optional_kwargs = map(set, pipeline_class._get_signature_keys(pipeline_class))
    unknown = sorted(set(kwargs) - expected_modules - optional_kwargs)
    if unknown:
        raise ValueError(
            f"Unexpected arguments {unknown} for loading {pipeline_class.__name__}; expected components or options "
            f"among {sorted(expected_modules | optional_kwargs)} or "
            f"{['dtype', 'variant', 'subfolder', *MODEL_LOADING_KWARGS, *DOWNLOAD_KWARGS]}."
        )
    if variant is not None and not any(folder.glob(f"*/*.{variant}.*")):
        raise ValueError(f"No weights of variant {variant!r} in {folder}; push them with `variant={variant!r}`.")
    init_kwargs = {name: model_index[name] for name in optional_kwargs if name in model_index}
    for name in expected_modules - set(kwargs):
        library, class_name = model_index.get(name) or (None, None)
        if library is None:
            init_kwargs[name] = None
            continue
        if library in COMMUNITY_MODULES:
            component_class = package_class(library, class_name)
        elif library in LOADABLE_LIBRARIES:
            component_class = getattr(importlib.import_module(library), class_name)
        else:
            raise ValueError(
                f"model_index.json names {name} = [{library!r}, {class_name!r}]; expected a library among "
                f"{list(LOADABLE_LIBRARIES)} or community code among {sorted(COMMUNITY_MODULES)}."
            )
        init_kwargs[name] = _load_component(component_class, folder, name, dtype, variant, options)
    return pipeline_class(**init_kwargs, **kwargs)


def _import_package_components(model_index: dict[str, Any]) -> None:
    """Import the modules of this package that `model_index` takes components from (`mnist_diffusion.models...`):
    diffusers' loader takes a class only from a module already imported, and `import mnist_diffusion` imports none."""
    for entry in model_index.values():
        if isinstance(entry, list) and isinstance(entry[0], str) and entry[0].startswith("mnist_diffusion."):
            with contextlib.suppress(ImportError):  # not a module of this package: diffusers' loader says so
                importlib.import_module(entry[0])


def read_model_index(folder: Path, name: str, passed: set[str]) -> dict[str, Any]:
    r"""
    The `model_index.json` of the pipeline folder `folder` (`name` as the user gave it), checked before loading:
    `OSError` naming the file when it is missing or not JSON, or naming the component folder that is missing
    (components in `passed`, given to `from_pretrained` by the caller, need none).
    """
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise OSError(f"{name} has no model_index.json; expected a pipeline saved with `save_pretrained` or pushed.")
    try:
        model_index = read_json_file(index_path)
    except ValueError as error:
        raise OSError(f"{error} Save or push the pipeline again.") from None
    for component, entry in model_index.items():
        if component.startswith("_") or component in passed or not isinstance(entry, list) or entry[0] is None:
            continue
        if not (folder / component).is_dir():
            raise OSError(
                f"{name} has no {component}/ folder, but its model_index.json names a {entry[1]} there; expected "
                f"the complete folder written by `save_pretrained` (or pass `{component}=...`)."
            )
    return model_index


def load_pipeline(
    pipeline_class: type[MnistDiffusionPipeline],
    pretrained_model_name_or_path: str | os.PathLike,
    load_saved: Callable[..., MnistDiffusionPipeline],
    **kwargs,
) -> MnistDiffusionPipeline:
    r"""
    What `MnistDiffusionPipeline.from_pretrained` does: load a local folder or Hub repo with the installed classes.

    A Hub repo is downloaded first (its `checkpoints/` excepted). A folder in the community-components layout (what
    [`push_pipeline_to_hub`] uploads) is then built component by component with this package's classes rather than
    with the uploaded code; any other folder goes to `load_saved` (diffusers' `from_pretrained`) unchanged.

    Args:
        pipeline_class (`type`): The pipeline class to build.
        pretrained_model_name_or_path (`str` or `os.PathLike`): A local folder or a Hub repo id.
        load_saved (`Callable`): Loader for folders written by `save_pretrained`, called as
            `load_saved(folder, **kwargs)`.
        kwargs: `revision`, `token`, `cache_dir`, `force_download`, `local_files_only` for the download;
            `subfolder` for a pipeline pushed into a folder of the repo; `dtype` (or diffusers' older name
            `torch_dtype`), `variant`, `low_cpu_mem_usage`, `use_safetensors`, components (`unet=...`, or
            `unet=None` to load only what encodes text) and `id2label` for the pipeline.

    Example:

    ```py
    >>> from mnist_diffusion import MnistDiffusionPipeline

    >>> pipe = MnistDiffusionPipeline.from_pretrained("user/mnist-diffusion", revision="main")  # doctest: +SKIP
    >>> text_only = MnistDiffusionPipeline.from_pretrained("user/mnist-diffusion", unet=None)  # doctest: +SKIP
    ```
    """
    name = str(pretrained_model_name_or_path)
    subfolder = normalize_subfolder(kwargs.pop("subfolder", None))
    if os.path.isdir(name):
        folder = Path(name) / subfolder
    else:
        download_kwargs = {key: kwargs.pop(key) for key in DOWNLOAD_KWARGS if key in kwargs}
        ignore_patterns = [f"{CHECKPOINTS_FOLDER}/*"]
        ignore_patterns += [f"*.{variant}.*" for variant in VARIANT_DTYPES if variant != kwargs.get("variant")]
        allow_patterns = [f"{subfolder}/*"] if subfolder else None
        try:
            snapshot = snapshot_download(
                name, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns, **download_kwargs
            )
        except LocalEntryNotFoundError as error:  # the Hub cannot be reached (or offline mode) and nothing is cached
            raise OSError(
                f"No folder named {name!r} exists here, and as a Hub repo id {name!r} is not in the local cache "
                f"({constants.HF_HUB_CACHE}) while the Hub cannot be reached ({type(error).__name__}); expected a "
                "pipeline folder saved with `save_pretrained`, or a repo id downloaded once while online."
            ) from None
        folder = Path(snapshot) / subfolder
    if kwargs.get("torch_dtype") is not None and kwargs.get("dtype") is not None:
        raise ValueError("Got both `dtype` and `torch_dtype`; pass only `dtype` (diffusers' newer name).")
    if "torch_dtype" in kwargs:
        kwargs["dtype"] = kwargs.pop("torch_dtype")
    model_index = read_model_index(folder, f"{name}/{subfolder}" if subfolder else name, set(kwargs))
    if not is_community_layout(model_index):
        _import_package_components(model_index)
        return load_saved(folder, **kwargs)
    for key in DOWNLOAD_KWARGS:
        kwargs.pop(key, None)
    pipeline = _load_community_layout(pipeline_class, folder, model_index, **kwargs)
    pipeline.register_to_config(_name_or_path=name)
    return pipeline
