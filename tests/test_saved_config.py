"""Saved configs carry no local paths: `_name_or_path` is written only when it is a Hub repo id."""

import json
from pathlib import Path

from conftest import make_tiny_pipeline, make_tiny_unet

import mnist_diffusion
from mnist_diffusion import MnistDiffusionPipeline, MnistUNet2DConditionModel
from mnist_diffusion.models.saved_config import is_local_path


def saved_names(folder: Path) -> dict[str, str]:
    """`_name_or_path` of every JSON config under `folder`, by file."""
    names = {}
    for path in folder.rglob("*.json"):
        config = json.loads(path.read_text())
        if isinstance(config, dict) and "_name_or_path" in config:
            names[str(path.relative_to(folder))] = config["_name_or_path"]
    return names


def test_a_reloaded_pipeline_saves_no_local_paths(tmp_path):
    make_tiny_pipeline().save_pretrained(tmp_path / "first")
    pipe = MnistDiffusionPipeline.from_pretrained(str(tmp_path / "first"))
    assert pipe.unet.config._name_or_path == str(tmp_path / "first" / "unet")
    pipe.save_pretrained(tmp_path / "second")
    assert saved_names(tmp_path / "second") == {}
    # the in-memory configs keep where they came from (pushing reads a saved folder's extras from there)
    assert str(pipe.config._name_or_path) == str(tmp_path / "first")
    assert pipe.unet.config._name_or_path == str(tmp_path / "first" / "unet")


def test_a_reloaded_unet_saves_no_local_path_but_keeps_a_repo_id(tmp_path):
    make_tiny_unet().save_pretrained(tmp_path / "unet")
    unet = MnistUNet2DConditionModel.from_pretrained(tmp_path / "unet")
    unet.save_pretrained(tmp_path / "again")
    assert saved_names(tmp_path / "again") == {}
    unet.register_to_config(_name_or_path="user/mnist-diffusion")
    unet.save_pretrained(tmp_path / "from-hub")
    assert saved_names(tmp_path / "from-hub") == {"config.json": "user/mnist-diffusion"}


def test_shipped_configs_hold_no_local_paths():
    shipped = Path(mnist_diffusion.__file__).parent / "pretrained"
    assert {file: name for file, name in saved_names(shipped).items() if is_local_path(name)} == {}


def test_local_paths_and_repo_ids_are_told_apart(tmp_path):
    assert is_local_path("/work/runs/s9/pd8/unet") and is_local_path("runs/s9/pd8/unet")
    assert is_local_path(str(tmp_path)) and is_local_path(tmp_path) and is_local_path("C:\\runs\\unet")
    assert not is_local_path("user/mnist-diffusion") and not is_local_path("mnist-diffusion")
    assert not is_local_path(None) and not is_local_path("")
