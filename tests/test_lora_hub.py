"""LoRA adapters and the Hub: loading onto a base without this package, pushing adapters, loading them by repo id."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
from conftest import make_tiny_pipeline
from huggingface_hub import ModelCard
from test_hub import hub, run_without_the_package  # noqa: F401  (hub: the loopback Hub fixture)
from test_lora import add_random_lora, generate, save_adapter
from test_train_lora import FAST, train_lora, write_digits

from mnist_diffusion.cli import main
from mnist_diffusion.lora_hub import describe_base_model, push_lora_to_hub, render_lora_card, write_lora_card
from mnist_diffusion.pretrained import DIFFUSION_MODEL


def test_trust_remote_code_base_loads_an_adapter_without_the_package(hub, tmp_path):  # noqa: F811
    pipe = make_tiny_pipeline()
    pipe.push_to_hub("user/lora-base", sample_steps=2)
    add_random_lora(pipe.unet, "style")
    save_adapter(pipe, tmp_path / "adapter", "style")
    expected = generate(pipe)
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        import torch
        from diffusers import DiffusionPipeline

        pipe = DiffusionPipeline.from_pretrained("user/lora-base", trust_remote_code=True)
        assert not type(pipe).__module__.startswith("mnist_diffusion"), type(pipe).__module__
        pipe.set_progress_bar_config(disable=True)
        pipe.load_lora_weights(sys.argv[2], adapter_name="style")
        images = pipe(class_labels=[1, 2], num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                      output_type="np").images
        np.save(sys.argv[1], images)
        """
    )
    images = run_without_the_package(script, hub, tmp_path, str(tmp_path / "adapter"))
    np.testing.assert_array_equal(images, expected)
    assert not np.array_equal(expected, generate(make_tiny_pipeline()))


def test_adapter_push_is_one_commit_with_card_and_samples_and_loads_by_repo_id(hub, tmp_path, capsys):  # noqa: F811
    pipe = make_tiny_pipeline()
    add_random_lora(pipe.unet, "style")
    folder = tmp_path / "my-style"
    save_adapter(pipe, folder, "style")
    styled = generate(pipe)
    write_lora_card(folder, "user/lora-base", pipe, instance_prompt="in dotted strokes", sample_steps=2)
    assert (folder / "samples.png").is_file()
    assert main(["push", str(folder), "--repo-id", "user/my-style"]) == 0
    assert "Pushed the LoRA adapter" in capsys.readouterr().out
    repo = hub.app.repos["user/my-style"]
    assert [c.message for c in repo.commits.values()] == ["initial commit", "Upload LoRA adapter"]
    files = repo.resolve("main").files
    assert {"pytorch_lora_weights.safetensors", "README.md", "samples.png"} <= set(files)
    card = ModelCard(files["README.md"].decode())
    assert card.data.base_model == "user/lora-base" and card.data.base_model_relation == "adapter"
    assert "lora" in card.data.tags and card.data.instance_prompt == "in dotted strokes"
    assert card.data.widget == [{"text": "in dotted strokes", "output": {"url": "samples.png"}}]
    assert 'load_lora_weights("user/my-style"' in card.text
    fresh = make_tiny_pipeline()
    fresh.load_lora_weights("user/my-style", adapter_name="style")
    np.testing.assert_array_equal(generate(fresh), styled)
    commit = push_lora_to_hub(folder, "user/my-style", commit_message="Again")
    assert commit.oid == hub.app.repos["user/my-style"].resolve("main").oid
    (folder / "README.md").unlink()
    with pytest.raises(ValueError, match="has no README.md model card"):
        push_lora_to_hub(folder, "user/my-style")
    with pytest.raises(ValueError, match="is not a LoRA adapter folder"):
        push_lora_to_hub(tmp_path, "user/my-style")


def test_the_card_names_a_local_base_and_the_bundled_release(tmp_path):
    card = render_lora_card(describe_base_model(DIFFUSION_MODEL), "me/style")
    assert card.data.base_model is None and "mnist-diffusion (bundled release)" in card.text
    assert card.data.to_dict()["mnist_diffusion_lora"]["base_model"] == "mnist-diffusion (bundled release)"
    assert describe_base_model(tmp_path) == str(tmp_path.resolve())


def test_train_lora_pushes_the_adapter(hub, tmp_path):  # noqa: F811
    base = tmp_path / "base"
    make_tiny_pipeline().save_pretrained(base)
    write_digits(tmp_path / "data", {"4": 2, "9": 2})
    argv = ["--pretrained_model_name_or_path", str(base), "--train_data_dir", str(tmp_path / "data")]
    argv += ["--output_dir", str(tmp_path / "run"), "--push_to_hub", "--hub_model_id", "user/trained-lora", *FAST]
    train_lora.main(train_lora.parse_args(argv))
    files = hub.app.repos["user/trained-lora"].resolve("main").files
    assert {"pytorch_lora_weights.safetensors", "README.md", "samples.png", "training_args.json"} <= set(files)
    assert not any(name.startswith("checkpoint") for name in files)
    make_tiny_pipeline().load_lora_weights("user/trained-lora")
