"""Synthetic datasets: MNIST's schema, the same images for any batch size or process count, kill -9 and resume, Hub."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from conftest import make_tiny_pipeline
from hub_server import HubServer
from huggingface_hub import constants, hf_api

from mnist_diffusion import MnistDiffusionPipeline
from mnist_diffusion.cli import main
from mnist_diffusion.data import load_split, prepare_training_data
from mnist_diffusion.synthetic_dataset import CARD_FILE, SETTINGS_FILE, generate_dataset, is_finished_dataset

REPO = Path(__file__).resolve().parents[1]
# The console script itself (`which mnist-diffusion` may name a shell shim that `accelerate launch` cannot run).
CONSOLE_SCRIPT = Path(sys.executable).parent / "mnist-diffusion"
SUBPROCESS_ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
TOKEN = "hf_test_token_of_user"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny text- and class-conditioned pipeline saved to a folder, as `--model` takes it."""
    folder = tmp_path_factory.mktemp("model") / "tiny"
    make_tiny_pipeline().save_pretrained(folder)
    return folder


def cli_args(model_dir: Path, output_dir: Path, num_images: int, *extra: str) -> list[str]:
    return ["generate-dataset", "--model", str(model_dir), "--output-dir", str(output_dir),
            "--num-images", str(num_images), "--steps", "2", "--shard-size", "5", *extra]  # fmt: skip


def rows(folder: Path) -> list[tuple]:
    """Every row of a generated dataset as (pixels, label, prompt, seed), read back with `datasets`."""
    dataset = datasets.load_dataset(str(folder), split="train")
    return [(np.asarray(r["image"]).tobytes(), r["label"], r["prompt"], r["seed"]) for r in dataset]


def assert_same_up_to_rounding(first: Path, second: Path) -> None:
    r"""
    The same labels, prompts and seeds, and pixels within one grey level: another batch size or thread count sums
    floats in another order (about 1e-6 apart), which can round a pixel the other way.
    """
    a, b = rows(first), rows(second)
    assert [row[1:] for row in a] == [row[1:] for row in b]
    pixels = (
        [np.frombuffer(row[0], np.uint8).astype(int) for row in a],
        [np.frombuffer(row[0], np.uint8).astype(int) for row in b],
    )
    assert max(np.abs(x - y).max() for x, y in zip(*pixels, strict=True)) <= 1


def shards(folder: Path) -> list[Path]:
    return sorted((folder / "data").glob("*.parquet"))


def test_dataset_has_mnist_schema_card_and_batch_size_independent_images(model_dir, tmp_path):
    pipe = make_tiny_pipeline()
    generate_dataset(pipe, tmp_path / "a", 23, num_inference_steps=2, guidance_scale=2.0, shard_size=10, batch_size=4)
    loaded = MnistDiffusionPipeline.from_pretrained(model_dir)  # the same weights, named by a Path
    generate_dataset(
        loaded, tmp_path / "b", 23, num_inference_steps=2, guidance_scale=2.0, shard_size=10, batch_size=7
    )
    assert json.loads((tmp_path / "b" / SETTINGS_FILE).read_text())["model"] == str(model_dir)
    dataset = datasets.load_dataset(str(tmp_path / "a"), split="train")
    assert dataset.features["label"] == datasets.ClassLabel(names=[str(i) for i in range(10)])
    assert isinstance(dataset.features["image"], datasets.Image)
    assert dataset.column_names == ["image", "label", "prompt", "seed"]
    assert dataset["label"] == [i % 10 for i in range(23)] and dataset["seed"] == list(range(23))
    assert dataset["prompt"][:2] == ["a handwritten 0", "a handwritten 1"]
    assert [path.name for path in shards(tmp_path / "a")] == [f"train-0000{i}-of-00003.parquet" for i in range(3)]
    assert_same_up_to_rounding(tmp_path / "a", tmp_path / "b")
    card = (tmp_path / "a" / "README.md").read_text()
    assert "MnistDDPMScheduler, 2 steps" in card and "23 in 3 shards" in card and "| 0 | 3 |" in card
    data = prepare_training_data(load_split(str(tmp_path / "a")), resolution=8)  # how training/train.py reads it
    assert data.images.shape == (23, 1, 8, 8) and data.label_names[7] == "7"


def test_a_dataset_is_finished_once_its_card_is_written(tmp_path):
    assert not is_finished_dataset(tmp_path / "missing")
    generate_dataset(make_tiny_pipeline(), tmp_path / "run", 2, num_inference_steps=2)
    assert is_finished_dataset(tmp_path / "run") and is_finished_dataset(str(tmp_path / "run"))
    (tmp_path / "run" / CARD_FILE).unlink()  # as a run killed after its last shard leaves the folder
    assert not is_finished_dataset(tmp_path / "run")


def test_class_labels_and_prompts_file(model_dir, tmp_path):
    assert main(cli_args(model_dir, tmp_path / "labels", 4, "--class-labels", "3", "7")) == 0
    assert datasets.load_dataset(str(tmp_path / "labels"), split="train")["label"] == [3, 7, 3, 7]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("1: a thin 1\n\n8: a thick slanted 8\n")
    assert main(cli_args(model_dir, tmp_path / "prompts", 3, "--prompts-file", str(prompts))) == 0
    dataset = datasets.load_dataset(str(tmp_path / "prompts"), split="train")
    assert dataset["label"] == [1, 8, 1] and dataset["prompt"] == ["a thin 1", "a thick slanted 8", "a thin 1"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_give_the_dataset_of_one(model_dir, tmp_path):
    # Bit for bit: the same batches and threads per process as the two launched processes.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(cli_args(model_dir, tmp_path / "one", 23, "--batch-size", "4")) == 0
    finally:
        torch.set_num_threads(threads)
    launcher = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--main_process_ip", "127.0.0.1",
                "--main_process_port", str(free_port()), "--mixed_precision", "no"]  # fmt: skip
    command = [sys.executable, "-m", "accelerate.commands.launch", *launcher, str(CONSOLE_SCRIPT)]
    command += cli_args(model_dir, tmp_path / "two", 23, "--batch-size", "4")
    env = dict(SUBPROCESS_ENV, ACCELERATE_USE_CPU="1", MASTER_ADDR="127.0.0.1")
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("Wrote 23 images in 5 shards") == 1  # the main process reports
    assert rows(tmp_path / "two") == rows(tmp_path / "one")


def test_kill_9_leaves_complete_shards_and_the_same_command_finishes_the_dataset(model_dir, tmp_path):
    args = cli_args(model_dir, tmp_path / "killed", 60, "--batch-size", "5")
    process = subprocess.Popen([sys.executable, "-m", "mnist_diffusion.cli", *args], cwd=REPO, env=SUBPROCESS_ENV)
    deadline = time.monotonic() + 300
    while len(shards(tmp_path / "killed")) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    kept = {path: path.stat().st_mtime_ns for path in shards(tmp_path / "killed")}
    assert 2 <= len(kept) < 12, "the run should be killed part-way"
    assert not (tmp_path / "killed" / "README.md").exists()
    for path in kept:  # every shard that exists is complete
        assert len(datasets.Dataset.from_parquet(str(path))) == 5
    assert main(args) == 0
    assert {path: path.stat().st_mtime_ns for path in kept} == kept  # finished shards were not redone
    assert not list((tmp_path / "killed" / "data").glob(".*"))  # the killed run's partial shard is gone
    assert main(cli_args(model_dir, tmp_path / "uninterrupted", 60, "--batch-size", "6")) == 0
    assert_same_up_to_rounding(tmp_path / "killed", tmp_path / "uninterrupted")


def error_of(args: list[str], capsys) -> str:
    assert main(args) == 2
    output = capsys.readouterr().err
    errors = [line for line in output.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("mnist-diffusion: error: ") and "Traceback" not in output, output
    return errors[0]


def test_bad_input_gives_one_line_errors_and_writes_nothing(model_dir, tmp_path, capsys):
    assert "--num-images is 0" in error_of(cli_args(model_dir, tmp_path / "zero", 0), capsys)
    assert not (tmp_path / "zero").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert "holds no unfinished generate-dataset run" in error_of(cli_args(model_dir, foreign, 5), capsys)
    assert sorted(os.listdir(foreign)) == ["notes.txt"] and (foreign / "notes.txt").read_text() == "mine"
    assert "Unknown class label 'seven'" in error_of(
        cli_args(model_dir, tmp_path / "c", 5, "--class-labels", "seven"), capsys
    )
    assert "out of range" in error_of(cli_args(model_dir, tmp_path / "c", 5, "--class-labels", "12"), capsys)
    unlabelled = tmp_path / "unlabelled-model"
    make_tiny_pipeline(classes=False).save_pretrained(unlabelled)
    assert "has no class labels" in error_of(cli_args(unlabelled, tmp_path / "u", 5), capsys)
    assert not any(path.exists() for path in (tmp_path / "c", tmp_path / "u"))
    # A finished run, and an unfinished one resumed with other settings, are refused as they are.
    assert main(cli_args(model_dir, tmp_path / "done", 5)) == 0
    capsys.readouterr()
    settings = (tmp_path / "done" / SETTINGS_FILE).read_text()
    assert "already holds the finished dataset" in error_of(cli_args(model_dir, tmp_path / "done", 5), capsys)
    (tmp_path / "done" / "README.md").unlink()
    message = error_of(cli_args(model_dir, tmp_path / "done", 5, "--seed", "1"), capsys)
    assert "unfinished run with other settings (seed)" in message
    assert (tmp_path / "done" / SETTINGS_FILE).read_text() == settings and len(shards(tmp_path / "done")) == 1


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A local Hub; the real client in this process points at it."""
    with HubServer(tokens={TOKEN: "user"}) as server:
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        monkeypatch.setattr(hf_api.api, "endpoint", server.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        yield server


def test_push_to_hub_uploads_a_private_dataset_repo_in_one_commit(model_dir, tmp_path, hub, capsys):
    output_dir = tmp_path / "synthetic"
    assert main(cli_args(model_dir, output_dir, 7, "--push-to-hub", "user/synthetic", "--private")) == 0
    assert "Pushed" in capsys.readouterr().out
    repo = hub.app.repos["datasets/user/synthetic"]
    head = repo.resolve("main")
    assert repo.private and head.parent is not None and repo.commits[head.parent].parent is None  # one commit
    expected = {
        ".gitattributes",
        "README.md",
        "data/train-00000-of-00002.parquet",
        "data/train-00001-of-00002.parquet",
    }
    assert set(head.files) == expected
    downloaded = tmp_path / "downloaded"
    for name, content in head.files.items():
        (downloaded / name).parent.mkdir(parents=True, exist_ok=True)
        (downloaded / name).write_bytes(content)
    assert rows(downloaded) == rows(output_dir)
    assert json.loads((output_dir / SETTINGS_FILE).read_text())["num_images"] == 7
