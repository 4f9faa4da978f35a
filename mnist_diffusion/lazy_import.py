"""Lazy exports of a package's `__init__` (PEP 562), as diffusers' and transformers' `_LazyModule` defer imports."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, structure: dict[str, list[str]]) -> tuple[Callable[[str], Any], Callable[[], list]]:
    r"""
    A module `__getattr__` and `__dir__` for `package` that import each submodule of `structure` (submodule name ->
    the public names it defines) only when one of its names is first read, so that importing the package (or one of
    its light submodules) does not import torch or diffusers.

    Example:

    ```py
    >>> from mnist_diffusion.lazy_import import lazy_exports

    >>> # in mnist_diffusion/evaluation/__init__.py
    >>> __getattr__, __dir__ = lazy_exports(__name__, {"scoring": ["evaluate", "score_samples"]})  # doctest: +SKIP
    ```
    """
    owners = {name: submodule for submodule, names in structure.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in owners:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{owners[name]}"), name)
        setattr(sys.modules[package], name, value)  # later reads skip __getattr__
        return value

    def __dir__() -> list:
        return sorted(set(vars(sys.modules[package])) | set(owners))

    return __getattr__, __dir__
