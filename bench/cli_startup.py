"""Benchmark: start-up time of the `mnist-diffusion` command (`--help`, an argument error, `generate`), optionally
against another checkout of the package in the same run."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: name -> arguments of `python -m mnist_diffusion.cli`; `{output}` is a scratch image path.
COMMANDS = {
    "--help": ["--help"],
    "argument error": ["generate", "--steps", "x"],
    "generate -n 1 --steps 1": ["generate", "--class-label", "7", "-n", "1", "--steps", "1", "-o", "{output}"],
}


def package_root(checkout: Path, scratch: Path) -> Path:
    """A folder to put first on `PYTHONPATH` that imports `mnist_diffusion` from `checkout` (a repository clone),
    with its top-level `pipelines/` placed where the installed package has it (`mnist_diffusion.pipelines`)."""
    root = scratch / "package"
    shutil.copytree(checkout / "mnist_diffusion", root / "mnist_diffusion")
    shutil.copytree(checkout / "pipelines", root / "mnist_diffusion" / "pipelines", dirs_exist_ok=True)
    return root


def time_command(arguments: list[str], pythonpath: Path | None, output: Path) -> float:
    """Wall-clock seconds of one `python -m mnist_diffusion.cli ...` run (exit status 0 or 2 accepted)."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    command = [sys.executable, "-m", "mnist_diffusion.cli", *(a.format(output=output) for a in arguments)]
    start = time.perf_counter()  # run in the scratch folder: `python -m` puts the working folder first on sys.path
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=output.parent)
    seconds = time.perf_counter() - start
    if result.returncode not in (0, 2) or (result.returncode == 2 and "error" not in result.stderr):
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5, help="Runs of each command per tree (default 5).")
    parser.add_argument(
        "--compare",
        type=Path,
        help="Another checkout of the repository (e.g. `git worktree add /tmp/old <commit>`), timed interleaved.",
    )
    args = parser.parse_args()
    if args.repeats < 1:
        raise ValueError(f"--repeats is {args.repeats}; expected at least 1.")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        trees = {"this tree": None}
        if args.compare is not None:
            trees[f"{args.compare}"] = package_root(args.compare, scratch)
        times = {(tree, name): [] for tree in trees for name in COMMANDS}
        for name, arguments in COMMANDS.items():
            for pythonpath in trees.values():  # one warm-up run each (page cache, .pyc files)
                time_command(arguments, pythonpath, scratch / "warm.png")
            for _ in range(args.repeats):  # interleaved, so that load from other processes hits both trees alike
                for tree, pythonpath in trees.items():
                    times[tree, name].append(time_command(arguments, pythonpath, scratch / "grid.png"))
    print(f"{len(os.sched_getaffinity(0))} CPU cores, median (min-max) of {args.repeats} runs, seconds")
    for name in COMMANDS:
        cells = []
        for tree in trees:
            values = times[tree, name]
            cells.append(f"{tree}: {statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})")
        if len(trees) == 2:
            medians = [statistics.median(times[tree, name]) for tree in trees]
            cells.append(f"ratio {medians[1] / medians[0]:.1f}x")
        print(f"{name}: " + "; ".join(cells))


if __name__ == "__main__":
    main()
