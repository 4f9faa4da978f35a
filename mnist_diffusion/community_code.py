"""Export the package's own source as diffusers "community components", so Hub repos load without this package."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import diffusers

#: Modules uploaded with a pipeline, by the file name they get in the repo (`<component>/<name>.py`, or the root for
#: the pipeline). Their package imports must be `from mnist_diffusion.<...>.<name> import ...` of another module here.
COMMUNITY_MODULES: dict[str, str] = {
    "pipeline_mnist_diffusion": "mnist_diffusion.pipelines.pipeline_mnist_diffusion",
    "call_inputs": "mnist_diffusion.pipelines.call_inputs",
    "pipeline_output": "mnist_diffusion.pipelines.pipeline_output",
    "unet_mnist": "mnist_diffusion.models.unet_mnist",
    "scheduling_mnist_ddpm": "mnist_diffusion.schedulers.scheduling_mnist_ddpm",
    "lora": "mnist_diffusion.pipelines.lora",
}

#: Methods that only make sense with this package installed (they call `mnist_diffusion.hub`); left out of uploads,
#: where diffusers' generic `DiffusionPipeline.from_pretrained` and `save_pretrained` do the work.
PACKAGE_ONLY_METHODS = ("from_pretrained", "push_to_hub", "save_pretrained")

_PACKAGE_IMPORT = re.compile(r"^(?P<indent>[ \t]*)from mnist_diffusion\.(?P<path>[\w.]+) import ", flags=re.MULTILINE)
_OTHER_PACKAGE_IMPORT = re.compile(r"^[ \t]*(import mnist_diffusion\b|from mnist_diffusion import |from \.)", re.M)


def is_community_layout(model_index: dict[str, Any]) -> bool:
    """Whether a `model_index.json` names its pipeline as `[module, class]`: a repo with uploaded community code."""
    return isinstance(model_index.get("_class_name"), list)


def package_class(module_name: str, class_name: str) -> type:
    r"""
    The installed class behind a community-code entry of `model_index.json`, e.g. `["unet_mnist", "MnistUNet2D..."]`.

    Example:

    ```py
    >>> from mnist_diffusion.community_code import package_class

    >>> package_class("scheduling_mnist_ddpm", "MnistDDPMScheduler")
    <class 'mnist_diffusion.schedulers.scheduling_mnist_ddpm.MnistDDPMScheduler'>
    ```
    """
    if module_name not in COMMUNITY_MODULES:
        raise ValueError(f"Unknown community module {module_name!r}; expected one of {sorted(COMMUNITY_MODULES)}.")
    return getattr(importlib.import_module(COMMUNITY_MODULES[module_name]), class_name)


def community_source(module_name: str) -> tuple[str, list[str]]:
    r"""
    The self-contained source of a package module for upload, and the community modules it imports.

    Package imports `from mnist_diffusion.a.b.<name> import x` become `from .<name> import x` (diffusers copies
    relatively imported files of the same folder), and [`PACKAGE_ONLY_METHODS`] are removed from its classes.

    Example:

    ```py
    >>> source, dependencies = community_source("pipeline_mnist_diffusion")
    >>> dependencies
    ['call_inputs', 'lora', 'pipeline_output', 'scheduling_mnist_ddpm']
    ```
    """
    if module_name not in COMMUNITY_MODULES:
        raise ValueError(f"Unknown community module {module_name!r}; expected one of {sorted(COMMUNITY_MODULES)}.")
    source = Path(importlib.util.find_spec(COMMUNITY_MODULES[module_name]).origin).read_text(encoding="utf-8")
    source = _remove_package_only_methods(source)
    if match := _OTHER_PACKAGE_IMPORT.search(source):
        raise ValueError(
            f"{COMMUNITY_MODULES[module_name]} has the import {match.group(0).strip()!r}, which cannot be uploaded; "
            "expected only `from mnist_diffusion.<...>.<module> import ...` of the modules in COMMUNITY_MODULES."
        )
    dependencies = []

    def relative_import(match: re.Match) -> str:
        name = match.group("path").rsplit(".", 1)[-1]
        if COMMUNITY_MODULES.get(name) != f"mnist_diffusion.{match.group('path')}":
            raise ValueError(
                f"{COMMUNITY_MODULES[module_name]} imports mnist_diffusion.{match.group('path')}, which is not in "
                f"COMMUNITY_MODULES {sorted(COMMUNITY_MODULES.values())}; it cannot be uploaded."
            )
        dependencies.append(name)
        return f"{match.group('indent')}from .{name} import "

    return _PACKAGE_IMPORT.sub(relative_import, source), sorted(set(dependencies))


def _remove_package_only_methods(source: str) -> str:
    """`source` without the [`PACKAGE_ONLY_METHODS`] of its top-level classes (decorators and one blank line above)."""
    lines = source.splitlines(keepends=True)
    spans = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name in PACKAGE_ONLY_METHODS:
                    start = min([item.lineno] + [d.lineno for d in item.decorator_list]) - 1
                    start -= 1 if start > 0 and not lines[start - 1].strip() else 0
                    spans.append((start, item.end_lineno))
    for start, end in sorted(spans, reverse=True):
        del lines[start:end]
    return "".join(lines)


def _write_module(folder: Path, module_name: str) -> None:
    """Write `module_name` and, recursively, the community modules it imports into `folder`."""
    source, dependencies = community_source(module_name)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{module_name}.py").write_text(source, encoding="utf-8")
    for dependency in dependencies:
        if not (folder / f"{dependency}.py").exists():
            _write_module(folder, dependency)


def export_community_code(save_directory: str | Path) -> dict[str, Any]:
    r"""
    Turn a folder written by `save_pretrained` into diffusers' community-components layout, in place.

    The pipeline's module goes to the folder root and `_class_name` becomes `[module, class]`; each component whose
    class comes from this package gets its module in its subfolder and `[module, class]` in `model_index.json`.
    Components from diffusers or transformers (a `DDIMScheduler`, the CLIP text encoder) are left as they are. Then
    `DiffusionPipeline.from_pretrained(repo_id, trust_remote_code=True)` loads the repo without this package.

    Returns:
        `dict`: the rewritten `model_index.json` content.

    Example:

    ```py
    >>> from mnist_diffusion.community_code import export_community_code

    >>> pipe.save_pretrained("staging")  # doctest: +SKIP
    >>> export_community_code("staging")["unet"]  # doctest: +SKIP
    ['unet_mnist', 'MnistUNet2DConditionModel']
    ```
    """
    save_directory = Path(save_directory)
    index_path = save_directory / "model_index.json"
    if not index_path.is_file():
        raise ValueError(f"{save_directory} has no model_index.json; expected a folder written by `save_pretrained`.")
    model_index = json.loads(index_path.read_text(encoding="utf-8"))
    if is_community_layout(model_index):
        raise ValueError(f"{index_path} already names community code ({model_index['_class_name']}).")
    class_name = model_index["_class_name"]
    pipeline_class = getattr(diffusers, class_name, None)
    pipeline_module = (pipeline_class.__module__ if pipeline_class else "").rsplit(".", 1)[-1]
    if COMMUNITY_MODULES.get(pipeline_module) != getattr(pipeline_class, "__module__", None):
        raise ValueError(
            f"Pipeline class {class_name!r} is not defined in one of {sorted(COMMUNITY_MODULES.values())}."
        )
    _write_module(save_directory, pipeline_module)
    model_index["_class_name"] = [pipeline_module, class_name]
    for component, value in model_index.items():
        if not (isinstance(value, list) and isinstance(value[0], str) and value[0].startswith("mnist_diffusion.")):
            continue
        module_name = value[0].rsplit(".", 1)[-1]
        if COMMUNITY_MODULES.get(module_name) != value[0]:
            raise ValueError(
                f"Component {component!r} comes from {value[0]}, which is not in COMMUNITY_MODULES "
                f"{sorted(COMMUNITY_MODULES.values())}; it cannot be uploaded as community code."
            )
        _write_module(save_directory / component, module_name)
        model_index[component] = [module_name, value[1]]
    index_path.write_text(json.dumps(model_index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return model_index
