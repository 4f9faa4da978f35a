"""Hub tests: the real `huggingface_hub` client against a Hub-compatible server on 127.0.0.1 (tests/hub_server.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import TINY_TRAINING_ARGS, load_training_script, make_digit_dataset, make_tiny_pipeline
from diffusers import DiffusionPipeline
from hub_server import HubServer
from huggingface_hub import HfApi, ModelCard, constants, hf_api, hf_hub_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from mnist_diffusion import MnistDDPMScheduler, MnistDiffusionPipeline, MnistUNet2DConditionModel
from mnist_diffusion.cli import main
from mnist_diffusion.community_code import community_source, export_community_code
from mnist_diffusion.hub import push_checkpoint, push_pipeline_to_hub

TOKEN = "hf_test_token_of_user"
PUSH = {"sample_steps": 2}


def generate(pipe) -> np.ndarray:
    return pipe(
        class_labels=[1, 2], num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np"
    ).images


def repo_files(hub: HubServer, repo_id: str, revision: str = "main") -> dict[str, bytes]:
    return hub.app.repos[repo_id].resolve(revision).files


def load(repo_id: str, **kwargs) -> MnistDiffusionPipeline:
    pipe = MnistDiffusionPipeline.from_pretrained(repo_id, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A local Hub; the real client in this process points at it (the endpoint constants are read at import)."""
    home = tmp_path_factory.mktemp("hf_home")
    with HubServer(tokens={TOKEN: "user"}) as server, pytest.MonkeyPatch.context() as patch:
        patch.setattr(constants, "ENDPOINT", server.url)
        patch.setattr(
            constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}"
        )
        patch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
        patch.setattr(hf_api.api, "endpoint", server.url)
        patch.setenv("HF_HOME", str(home))
        patch.setenv("HF_TOKEN", TOKEN)
        yield server


@pytest.fixture(scope="module")
def pushed(hub):
    """A tiny text- and class-conditioned pipeline pushed to `user/tiny`, with its reference images."""
    pipe = make_tiny_pipeline()
    pipe.push_to_hub("user/tiny", **PUSH)
    return pipe, generate(pipe)


def test_push_uploads_weights_code_card_and_samples_in_one_commit(hub, pushed):
    files = repo_files(hub, "user/tiny")
    assert {
        "model_index.json",
        "README.md",
        "samples.png",
        "pipeline_mnist_diffusion.py",
        "scheduling_mnist_ddpm.py",
        "unet/unet_mnist.py",
        "unet/diffusion_pytorch_model.safetensors",
        "scheduler/scheduling_mnist_ddpm.py",
        "text_encoder/model.safetensors",
        "tokenizer/tokenizer.json",
    } <= set(files)
    model_index = json.loads(files["model_index.json"])
    assert model_index["_class_name"] == ["pipeline_mnist_diffusion", "MnistDiffusionPipeline"]
    assert model_index["unet"] == ["unet_mnist", "MnistUNet2DConditionModel"]
    assert model_index["scheduler"] == ["scheduling_mnist_ddpm", "MnistDDPMScheduler"]
    assert model_index["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert not re.search(rb"^\s*(from|import) mnist_diffusion", files["pipeline_mnist_diffusion.py"], flags=re.M)
    assert [c.message for c in hub.app.repos["user/tiny"].commits.values()] == [
        "initial commit",
        "Upload MnistDiffusionPipeline",
    ]


def test_load_by_repo_id_with_installed_classes(hub, pushed):
    pipe, expected = pushed
    loaded = load("user/tiny")
    assert type(loaded) is MnistDiffusionPipeline
    assert type(loaded.unet) is MnistUNet2DConditionModel and type(loaded.scheduler) is MnistDDPMScheduler
    assert loaded.config.id2label == pipe.config.id2label
    np.testing.assert_array_equal(generate(loaded), expected)


def run_without_the_package(script: str, hub, tmp_path, *args: str) -> np.ndarray:
    """
    Run `script` in a fresh Python where `import mnist_diffusion` fails, against the loopback Hub without a token;
    `sys.argv[1]` is where it saves its images (returned), then `args`.
    """
    shadow = tmp_path / "shadow" / "mnist_diffusion"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("mnist_diffusion is not installed here")\n')
    env = {
        **os.environ,
        "PYTHONPATH": str(shadow.parent),
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "home"),
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
    }
    env.pop("HF_TOKEN")
    images = tmp_path / "images.npy"
    result = subprocess.run(
        [sys.executable, "-c", script, str(images), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return np.load(images)


def test_trust_remote_code_load_without_the_package(hub, pushed, tmp_path):
    _, expected = pushed
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        import torch
        try:
            import mnist_diffusion
        except ImportError:
            pass
        else:
            sys.exit("mnist_diffusion must not be importable in this test")
        from diffusers import DiffusionPipeline

        pipe = DiffusionPipeline.from_pretrained("user/tiny", trust_remote_code=True)
        assert type(pipe).__name__ == "MnistDiffusionPipeline", type(pipe)
        assert not type(pipe).__module__.startswith("mnist_diffusion"), type(pipe).__module__
        pipe.set_progress_bar_config(disable=True)
        images = pipe(class_labels=[1, 2], num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                      output_type="np").images
        np.save(sys.argv[1], images)
        """
    )
    np.testing.assert_array_equal(run_without_the_package(script, hub, tmp_path), expected)


def test_uploaded_code_is_generated_from_the_package_source():
    source, dependencies = community_source("pipeline_mnist_diffusion")
    assert dependencies == ["call_inputs", "lora", "pipeline_output", "scheduling_mnist_ddpm"]
    assert "from .scheduling_mnist_ddpm import predict_original_sample" in source
    assert not re.search(r"^\s*(from|import) mnist_diffusion", source, flags=re.M)
    assert "def from_pretrained" not in source
    assert "def push_to_hub" not in source and "def __call__" in source
    compile(source, "pipeline_mnist_diffusion.py", "exec")
    with pytest.raises(ValueError, match="Unknown community module 'os'"):
        community_source("os")


def test_local_folders_load_as_before(tmp_path):
    pipe = make_tiny_pipeline()
    pipe.save_pretrained(tmp_path / "saved")
    expected = generate(pipe)
    np.testing.assert_array_equal(generate(load(tmp_path / "saved")), expected)
    generic = DiffusionPipeline.from_pretrained(tmp_path / "saved")
    generic.set_progress_bar_config(disable=True)
    assert type(generic) is MnistDiffusionPipeline
    np.testing.assert_array_equal(generate(generic), expected)
    export_community_code(tmp_path / "saved")
    np.testing.assert_array_equal(generate(load(tmp_path / "saved")), expected)
    with pytest.raises(ValueError, match="already names community code"):
        export_community_code(tmp_path / "saved")


def test_repush_adds_one_commit_and_keeps_other_files(hub):
    pipe = make_tiny_pipeline(text=False)
    first = pipe.push_to_hub("user/repush", **PUSH)
    api = HfApi()
    api.upload_file(path_or_fileobj=b"my notes", path_in_repo="notes.txt", repo_id="user/repush")
    with torch.no_grad():
        pipe.unet.conv_in.weight.add_(0.5)
    second = pipe.push_to_hub("user/repush", commit_message="Retrained", **PUSH)
    assert second.oid != first.oid
    assert [c.message for c in hub.app.repos["user/repush"].commits.values()][-1] == "Retrained"
    assert repo_files(hub, "user/repush")["notes.txt"] == b"my notes"
    np.testing.assert_array_equal(generate(load("user/repush")), generate(pipe))

    pipe.push_to_hub("user/repush", delete_missing=True, samples=False)
    files = repo_files(hub, "user/repush")
    assert "notes.txt" not in files and "samples.png" not in files
    assert {".gitattributes", "model_index.json", "README.md"} <= set(files)


def test_pushing_a_saved_folder_takes_its_extra_model_folders_along(hub, tmp_path):
    # as mnist-diffusion-fast keeps a UNet per step count beside the pipeline's own
    pipe = make_tiny_pipeline(text=False)
    pipe.save_pretrained(tmp_path / "fast")
    torch.manual_seed(1)
    other = MnistUNet2DConditionModel.from_config(pipe.unet.config)
    other.save_pretrained(tmp_path / "fast" / "unet_1step")
    (tmp_path / "fast" / "checkpoint-5").mkdir()
    (tmp_path / "fast" / "checkpoint-5" / "model.safetensors").write_bytes(b"not a model folder")
    push_pipeline_to_hub(tmp_path / "fast", "user/fast", samples=False)
    files = repo_files(hub, "user/fast")
    assert {"unet_1step/config.json", "unet_1step/diffusion_pytorch_model.safetensors"} <= set(files)
    assert not any(name.startswith("checkpoint-5") for name in files)
    loaded = MnistUNet2DConditionModel.from_pretrained("user/fast", subfolder="unet_1step")
    for name, tensor in other.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor)


def test_model_card_metadata_round_trip(hub, tmp_path):
    pipe = make_tiny_pipeline()
    pipe.save_pretrained(tmp_path)
    (tmp_path / "training_args.json").write_text(json.dumps({"dataset_name": "ylecun/mnist", "learning_rate": 1e-3}))
    (tmp_path / "eval_results.json").write_text(
        json.dumps({"dataset": "ylecun/mnist", "split": "test", "metrics": {"fid": 12.5, "accuracy": 0.93}})
    )
    push_pipeline_to_hub(tmp_path, "user/carded", **PUSH)
    card = ModelCard.load("user/carded")
    assert card.data.library_name == "diffusers"
    assert card.data.pipeline_tag == "text-to-image"
    assert card.data.license == "apache-2.0"
    assert card.data.datasets == ["ylecun/mnist"]
    assert "mnist-diffusion" in card.data.tags
    assert {(r.metric_type, r.metric_value, r.dataset_split) for r in card.data.eval_results} == {
        ("fid", 12.5, "test"),
        ("accuracy", 0.93, "test"),
    }
    assert "![Samples generated by this model](samples.png)" in card.text
    assert "| `learning_rate` | `0.001` |" in card.text
    assert 'MnistDiffusionPipeline.from_pretrained("user/carded")' in card.text
    assert json.loads(repo_files(hub, "user/carded")["training_args.json"])["learning_rate"] == 1e-3


def test_missing_repo_revision_and_file_give_clear_errors(hub, pushed):
    with pytest.raises(RepositoryNotFoundError, match="user/does-not-exist"):
        load("user/does-not-exist")
    with pytest.raises(RevisionNotFoundError, match="no-such-branch"):
        load("user/tiny", revision="no-such-branch")
    with pytest.raises(ValueError, match=r"Unexpected arguments \['vae'\]"):
        load("user/tiny", vae=None)
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download("user/tiny", "unet/missing.safetensors")
    api = HfApi()
    api.create_repo("user/not-a-pipeline")
    api.upload_file(path_or_fileobj=b"# hello\n", path_in_repo="README.md", repo_id="user/not-a-pipeline")
    with pytest.raises(OSError, match="user/not-a-pipeline has no model_index.json"):
        load("user/not-a-pipeline")


def test_interrupted_push_leaves_the_repo_as_it_was(hub):
    pipe = make_tiny_pipeline(text=False)
    pipe.push_to_hub("user/atomic", **PUSH)
    repo = hub.app.repos["user/atomic"]
    head, files = repo.branches["main"], dict(repo_files(hub, "user/atomic"))
    with torch.no_grad():
        pipe.unet.conv_in.weight.mul_(2)
    hub.app.fail_next_commit = True
    with pytest.raises(HfHubHTTPError, match="500"):
        pipe.push_to_hub("user/atomic", delete_missing=True, **PUSH)
    assert repo.branches["main"] == head and repo_files(hub, "user/atomic") == files
    pipe.push_to_hub("user/atomic", **PUSH)
    assert repo.branches["main"] != head


def test_private_branch_push_with_fp16_variant(hub):
    pipe = make_tiny_pipeline()
    commit = pipe.push_to_hub("user/private", private=True, revision="dev", variant="fp16", **PUSH)
    assert hub.app.repos["user/private"].private
    assert set(repo_files(hub, "user/private")) == {".gitattributes"}
    files = repo_files(hub, "user/private", "dev")
    assert {"unet/diffusion_pytorch_model.fp16.safetensors", "text_encoder/model.fp16.safetensors"} <= set(files)
    assert commit.oid == hub.app.repos["user/private"].branches["dev"]
    with pytest.raises(RepositoryNotFoundError):
        load("user/private", revision="dev", token=False)
    half = load("user/private", revision="dev", variant="fp16", torch_dtype=torch.float16)
    assert half.unet.dtype == torch.float16 and half.text_encoder.dtype == torch.float16
    with pytest.raises(ValueError, match="Unknown variant 'int8'"):
        pipe.push_to_hub("user/private", variant="int8")


def test_push_checkpoint_into_subfolder(hub, pushed, tmp_path):
    checkpoint = tmp_path / "checkpoint-500"
    (checkpoint / "unet").mkdir(parents=True)
    (checkpoint / "unet" / "weights.bin").write_bytes(b"\0" * 64)
    (checkpoint / "optimizer.bin").write_bytes(b"\1" * 32)
    before = repo_files(hub, "user/tiny")
    push_checkpoint(checkpoint, "user/tiny")
    files = repo_files(hub, "user/tiny")
    assert files["checkpoints/checkpoint-500/unet/weights.bin"] == b"\0" * 64
    assert files["checkpoints/checkpoint-500/optimizer.bin"] == b"\1" * 32
    assert {k: v for k, v in files.items() if not k.startswith("checkpoints/")} == before
    with pytest.raises(ValueError, match="does not exist or is empty"):
        push_checkpoint(tmp_path / "checkpoint-missing", "user/tiny")


def test_cli_push(hub, tmp_path, capsys):
    make_tiny_pipeline(classes=False).save_pretrained(tmp_path / "saved")
    assert main(["push", str(tmp_path / "saved"), "--repo-id", "user/cli", "--sample-steps", "2"]) == 0
    assert "Pushed" in capsys.readouterr().out
    assert "unet/unet_mnist.py" in repo_files(hub, "user/cli")
    assert main(["push", str(tmp_path / "nothing"), "--repo-id", "user/cli"]) == 2
    assert "is not a saved pipeline" in capsys.readouterr().err


def test_training_pushes_its_pipeline_card_and_checkpoints(hub, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    make_digit_dataset().to_parquet(str(data / "train-00000-of-00001.parquet"))
    train = load_training_script("train")
    argv = [*TINY_TRAINING_ARGS, "--dataset_name", str(data), "--output_dir", str(tmp_path / "run")]
    push = ["--push_to_hub", "--push_checkpoints", "--hub_model_id", "user/trained"]
    with pytest.raises(ValueError, match="pass --push_to_hub too"):
        train.parse_args(argv + ["--push_checkpoints"])
    train.main(train.parse_args(argv + push + ["--max_train_steps", "2", "--checkpointing_steps", "1"]))
    files = repo_files(hub, "user/trained")
    assert {"model_index.json", "README.md", "training_args.json", "unet/diffusion_pytorch_model.safetensors"} <= set(
        files
    )
    assert any(name.startswith("checkpoints/checkpoint-1/") for name in files)
    assert any(name.startswith("checkpoints/checkpoint-2/") for name in files)
    assert "hub_token" not in json.loads(files["training_args.json"])
    loaded = load("user/trained")
    assert loaded.config.id2label == {"0": "0", "1": "1", "2": "2", "3": "3"}
    assert loaded(class_labels="3", num_inference_steps=2, output_type="np").images.shape == (1, 8, 8, 1)


def test_unet_none_loads_only_what_encodes_text(hub, pushed, tmp_path):
    pipe, _ = pushed
    pipe.save_pretrained(tmp_path / "saved")
    for source in ("user/tiny", tmp_path / "saved"):
        text_only = load(source, unet=None)
        assert text_only.unet is None and type(text_only.scheduler) is MnistDDPMScheduler
        assert text_only.config.id2label == pipe.config.id2label
        for name, tensor in pipe.text_encoder.state_dict().items():
            torch.testing.assert_close(text_only.text_encoder.state_dict()[name], tensor)


def test_loading_options_are_accepted_as_diffusers_accepts_them(hub, pushed):
    _, expected = pushed
    for options in ({"low_cpu_mem_usage": False}, {"use_safetensors": True}, {"low_cpu_mem_usage": True}):
        np.testing.assert_array_equal(generate(load("user/tiny", **options)), expected)
    half = load("user/tiny", dtype=torch.bfloat16)
    assert half.unet.dtype == torch.bfloat16 and half.text_encoder.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="Got both `dtype` and `torch_dtype`"):
        load("user/tiny", dtype=torch.float16, torch_dtype=torch.float16)


def test_push_pickled_weights_into_a_subfolder(hub, pushed):
    pipe, expected = pushed
    pipe.push_to_hub("user/tiny", safe_serialization=False, subfolder="pickled/v1", **PUSH)
    files = repo_files(hub, "user/tiny")
    assert {"pickled/v1/model_index.json", "pickled/v1/unet/diffusion_pytorch_model.bin",
            "pickled/v1/unet/unet_mnist.py", "pickled/v1/samples.png"} <= set(files)  # fmt: skip
    # transformers 5 writes only safetensors, whatever it is asked: the text encoder stays as it writes it.
    assert not any(name.startswith("pickled/v1/unet/") and name.endswith(".safetensors") for name in files)
    assert "pickled/v1/README.md" not in files  # as diffusers: a subfolder push writes no card
    np.testing.assert_array_equal(generate(load("user/tiny", subfolder="pickled/v1")), expected)
    with pytest.raises(OSError, match="safetensors"):
        load("user/tiny", subfolder="pickled/v1", use_safetensors=True)
    root_card = files["README.md"]
    with pytest.raises(ValueError, match=r"`subfolder` is '\.\./escape'"):
        pipe.push_to_hub("user/tiny", subfolder="../escape", **PUSH)
    assert repo_files(hub, "user/tiny")["README.md"] == root_card


def test_save_pretrained_push_to_hub_goes_through_the_package_push(hub, tmp_path):
    pipe = make_tiny_pipeline()
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "training_args.json").write_text(json.dumps({"learning_rate": 0.002}))
    commit = pipe.save_pretrained(folder, push_to_hub=True, repo_id="user/saved", sample_steps=2)
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    files = repo_files(hub, "user/saved")
    assert {"unet/unet_mnist.py", "pipeline_mnist_diffusion.py", "README.md", "samples.png"} <= set(files)
    assert json.loads(files["training_args.json"]) == {"learning_rate": 0.002}
    assert "| `learning_rate` | `0.002` |" in files["README.md"].decode()
    assert commit.oid == hub.app.repos["user/saved"].branches["main"]
    assert len(hub.app.repos["user/saved"].commits) == 2  # the repo's initial commit and this push, nothing else
    np.testing.assert_array_equal(generate(load("user/saved")), generate(pipe))
    with pytest.raises(ValueError, match="Unknown variant 'int4' to push"):
        pipe.save_pretrained(tmp_path / "never", push_to_hub=True, variant="int4")
    assert not (tmp_path / "never").exists()


def test_push_without_a_token_says_so_before_any_work(hub, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    make_tiny_pipeline(classes=False).save_pretrained(tmp_path / "saved")
    assert main(["push", str(tmp_path / "saved"), "--repo-id", "user/no-token"]) == 2
    assert "No Hugging Face token found" in capsys.readouterr().err
    with pytest.raises(ValueError, match="No Hugging Face token found"):
        push_checkpoint(tmp_path / "saved", "user/no-token")
    with pytest.raises(ValueError, match="No Hugging Face token found"):
        make_tiny_pipeline().save_pretrained(tmp_path / "never", push_to_hub=True, repo_id="user/no-token")
    assert not (tmp_path / "never").exists()
    assert "user/no-token" not in hub.app.repos


def test_push_removes_staging_folders_of_killed_pushes(hub, tmp_path, monkeypatch):
    from mnist_diffusion import hub as hub_module

    monkeypatch.setattr(hub_module, "STAGING_ROOT", tmp_path / "staging")
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, alive = int(finished.stdout), os.getppid()
    for pid in (dead, alive):  # what a push killed while staging leaves behind: its weights
        (tmp_path / "staging" / f"{pid}-left" / "repo" / "unet").mkdir(parents=True)
        (tmp_path / "staging" / f"{pid}-left" / "repo" / "unet" / "weights.safetensors").write_bytes(b"\0" * 64)
    make_tiny_pipeline(classes=False).push_to_hub("user/staged", samples=False)
    assert [p.name for p in (tmp_path / "staging").iterdir()] == [f"{alive}-left"]  # ours is gone too
