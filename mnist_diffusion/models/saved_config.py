"""Keep this machine's folder names out of saved configs: `_name_or_path` is written only when it is a Hub repo id."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from diffusers.configuration_utils import ConfigMixin, FrozenDict
from huggingface_hub.utils import HFValidationError, validate_repo_id


def is_local_path(name: Any) -> bool:
    r"""
    Whether a config's `_name_or_path` names a file or folder (here or on the machine that saved it) rather than a
    Hub repo id: absolute, existing here, or not a valid repo id (`"runs/s9/pd8/unet"`).

    Example:

    ```py
    >>> from mnist_diffusion.models.saved_config import is_local_path

    >>> is_local_path("/work/runs/unet"), is_local_path("user/mnist-diffusion"), is_local_path("a/b/unet")
    (True, False, True)
    ```
    """
    if isinstance(name, os.PathLike):
        return True
    if not isinstance(name, str) or not name:
        return False
    if os.path.isabs(name) or os.path.exists(name):
        return True
    try:
        validate_repo_id(name)
    except HFValidationError:
        return True
    return False


@contextlib.contextmanager
def without_local_paths(*configurables: Any) -> Iterator[None]:
    r"""
    Within the block, the configs of `configurables` (diffusers `ConfigMixin` objects; anything else is skipped) lack
    a `_name_or_path` that [`is_local_path`], so `save_pretrained` does not write it (nor push it); the in-memory
    configs are restored afterwards (loading code reads the folder a pipeline came from there).

    Example:

    ```py
    >>> with without_local_paths(pipe, *pipe.components.values()):  # doctest: +SKIP
    ...     pipe.save_pretrained("shared-copy")
    ```
    """
    stripped = []
    for obj in configurables:
        if isinstance(obj, ConfigMixin) and is_local_path(obj.config.get("_name_or_path")):
            stripped.append((obj, obj._internal_dict))
            obj._internal_dict = FrozenDict({k: v for k, v in obj._internal_dict.items() if k != "_name_or_path"})
    try:
        yield
    finally:
        for obj, config in stripped:
            obj._internal_dict = config
