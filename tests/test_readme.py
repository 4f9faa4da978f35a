"""The README's quickstart is `examples/quickstart.py`, and it runs as written."""

import re
import runpy
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_quickstart_file_is_the_readme_code():
    example = (ROOT / "examples" / "quickstart.py").read_text()
    assert readme_python_blocks()[0] in example


def test_quickstart_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(ROOT / "examples" / "quickstart.py"), run_name="__main__")
    assert (tmp_path / "seven.png").exists()
    assert (tmp_path / "my-mnist-pipeline" / "unet" / "diffusion_pytorch_model.safetensors").exists()
    printed = capsys.readouterr().out
    assert "torch.Size([20, 4, 1, 28, 28])" in printed and "(10, 28, 28, 1)" in printed
    assert "torch.Size([5, 1, 1, 28, 28])" in printed


def test_readme_stays_a_front_door_under_15000_characters():
    assert len((ROOT / "README.md").read_text()) < 15_000


def test_what_the_readme_commands_write_is_ignored_by_git():
    written = ["sevens.png", "fast-sevens.png", "seven.png", "my-mnist-pipeline/unet/config.json", "mnist-model/x"]
    result = subprocess.run(["git", "check-ignore", *written], cwd=ROOT, capture_output=True, text=True)
    assert result.stdout.split() == written
