"""LoRA adapters and the Hub: loading onto a base without this package, pushing adapters, loading them by repo id."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
from conftest import make_tiny_pipeline
from test_hub import hub  # noqa: F401  (the loopback Hub fixture)
from test_lora import add_random_lora, generate, save_adapter


def test_trust_remote_code_base_loads_an_adapter_without_the_package(hub, tmp_path):  # noqa: F811
    pipe = make_tiny_pipeline()
    pipe.push_to_hub("user/lora-base", sample_steps=2)
    add_random_lora(pipe.unet, "style")
    save_adapter(pipe, tmp_path / "adapter", "style")
    expected = generate(pipe)
    shadow = tmp_path / "shadow" / "mnist_diffusion"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("mnist_diffusion is not installed here")\n')
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
    env = {
        **os.environ,
        "PYTHONPATH": str(shadow.parent),
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "home"),
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
    }
    env.pop("HF_TOKEN")
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "images.npy"), str(tmp_path / "adapter")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_array_equal(np.load(tmp_path / "images.npy"), expected)
    assert not np.array_equal(expected, generate(make_tiny_pipeline()))
