"""A training run's output folder: its file names, checkpoints (atomic save, resume, pruning) and the final swap."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from accelerate import Accelerator
    from diffusers import DiffusionPipeline

logger = logging.getLogger(__name__)

#: The arguments of the run (`write_training_args`); also the marker that an output folder is a training script's.
TRAINING_ARGS_FILE = "training_args.json"
#: Final metrics of a run (the classifier and CLIP scripts write them; the Hub card shows them).
EVAL_RESULTS_FILE = "eval_results.json"
#: One JSON line of metrics per evaluation during training (`train.py --eval_classifier`).
EVAL_HISTORY_FILE = "eval_history.jsonl"
#: Inside each `checkpoint-N`: `{"global_step": N}`, written last, so a checkpoint holding it is complete.
CHECKPOINT_STATE_FILE = "training_state.json"
#: Inside the output folder: the final pipeline is written to the first, complete, then swapped in; the components it
#: replaces wait in the second until the swap is done.
PIPELINE_STAGING_NAME = ".pipeline.tmp"
PIPELINE_RETIRED_NAME = ".pipeline.old"
#: The files of a checkpoint that accelerate pickles (optimizer, scheduler, RNG states, registered objects).
PICKLE_SUFFIXES = (".bin", ".pkl", ".pt", ".pth")


def check_output_dir(
    output_dir: str, marker: str = TRAINING_ARGS_FILE, refusal: str = "was not written by this script"
) -> None:
    r"""
    Refuse an output folder that is a file, lies inside a file, or is not empty and holds no `marker` (the file a
    training script writes there), so that nothing of someone else's is overwritten; `refusal` completes the message.

    Example:

    ```py
    >>> from mnist_diffusion.training.run_folder import check_output_dir

    >>> check_output_dir("mnist-classifier", marker="eval_results.json", refusal="holds no classifier of ours")
    ```
    """
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(f"--output_dir {output_dir!r} is a file; expected a folder.")
    parent = os.path.dirname(os.path.abspath(output_dir))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"--output_dir {output_dir!r} is inside {parent!r}, which is a file; expected a folder path.")
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not os.path.isfile(os.path.join(output_dir, marker)):
        raise ValueError(
            f"--output_dir {output_dir!r} is not empty and {refusal} (no {marker}); expected a new or empty folder, "
            "or the output folder of an earlier run."
        )


def _checkpoint_step(name: str) -> int | None:
    """N for a folder name `checkpoint-N`, else `None`."""
    prefix, _, step = name.partition("-")
    return int(step) if prefix == "checkpoint" and step.isdigit() else None


def find_checkpoints(output_dir: str) -> list[str]:
    """Complete checkpoints (`checkpoint-N` holding `training_state.json`) in `output_dir`, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    names = [
        name
        for name in os.listdir(output_dir)
        if _checkpoint_step(name) is not None and os.path.isfile(os.path.join(output_dir, name, CHECKPOINT_STATE_FILE))
    ]
    return [os.path.join(output_dir, name) for name in sorted(names, key=_checkpoint_step)]


def checkpoint_leftovers(output_dir: str) -> list[str]:
    r"""
    What killed saves and prunings leave in `output_dir`: `checkpoint-N.tmp` (a save that did not finish),
    `checkpoint-N.deleting` (a pruning that did not finish) and `checkpoint-N` without `training_state.json`.
    None of them can be resumed from.
    """
    if not os.path.isdir(output_dir):
        return []
    leftovers = []
    for name in sorted(os.listdir(output_dir)):
        stem, dot, suffix = name.partition(".")
        if _checkpoint_step(stem) is None or not os.path.isdir(os.path.join(output_dir, name)):
            continue
        if (dot and suffix in ("tmp", "deleting")) or (
            not dot and not os.path.isfile(os.path.join(output_dir, name, CHECKPOINT_STATE_FILE))
        ):
            leftovers.append(os.path.join(output_dir, name))
    return leftovers


def remove_checkpoint(path: str) -> None:
    """Delete a checkpoint folder: renamed to `<name>.deleting` first, so a kill mid-way leaves a named leftover."""
    deleting = path if path.endswith(".deleting") else path + ".deleting"
    if deleting != path:
        if os.path.exists(deleting):
            shutil.rmtree(deleting)
        os.replace(path, deleting)
    shutil.rmtree(deleting)


def prune_checkpoints(output_dir: str, limit: int | None) -> None:
    """Remove the complete checkpoints beyond the newest `limit` (all kept if `None`) and every leftover."""
    if limit is not None:
        for old in find_checkpoints(output_dir)[:-limit]:
            remove_checkpoint(old)
    for leftover in checkpoint_leftovers(output_dir):
        remove_checkpoint(leftover)


def checkpoint_problem(checkpoint: str) -> str | None:
    r"""
    Why `checkpoint` cannot be resumed from, or `None` when every file reads back: its `training_state.json` must
    hold an integer `global_step`, each safetensors file must load, and each pickle (optimizer, scheduler, RNG states)
    must load as `accelerator.load_state` reads it (`torch.load(..., weights_only=True)`, numpy's RNG arrays
    allowed), which rebuilds tensors and plain containers only and runs no code: a pickle that asks for more (a file
    dropped there with a `__reduce__` payload, say) is refused unread, so a resume never unpickles arbitrary code.
    """
    # imported here: the file names above stay cheap to import (hub.py, visualization.py, lora_hub.py use them)
    from accelerate.utils import load as load_pickle
    from safetensors.torch import load_file

    try:
        with open(os.path.join(checkpoint, CHECKPOINT_STATE_FILE)) as f:
            state = json.load(f)
    except (OSError, ValueError) as error:
        return f"{CHECKPOINT_STATE_FILE}: {error}"
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return f"{CHECKPOINT_STATE_FILE} holds no integer global_step"
    for root, _, files in os.walk(checkpoint):
        for name in sorted(files):
            path = os.path.join(root, name)
            try:
                if name.endswith(".safetensors"):
                    load_file(path)
                elif name.endswith(PICKLE_SUFFIXES):
                    load_pickle(path, map_location="cpu", weights_only=True)
            except Exception as error:  # whatever a damaged or unsafe file raises (EOFError, UnpicklingError, ...)
                message = (str(error).splitlines() or [""])[0]
                return f"{os.path.relpath(path, checkpoint)}: {type(error).__name__} {message}".strip()
    return None


def latest_readable_checkpoint(output_dir: str) -> str | None:
    r"""
    The newest checkpoint of `output_dir` whose files all read back (`None` if there is no checkpoint), with a
    warning naming each newer one skipped; `ValueError` naming them when none reads back.
    """
    skipped = []
    for checkpoint in reversed(find_checkpoints(output_dir)):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            for bad, bad_problem in skipped:
                warnings.warn(
                    f"Checkpoint {bad} cannot be read back ({bad_problem}); resuming from {checkpoint} instead.",
                    stacklevel=2,
                )
            return checkpoint
        skipped.append((checkpoint, problem))
    if skipped:
        raise ValueError(
            "--resume_from_checkpoint latest: no checkpoint in --output_dir can be read back ("
            + "; ".join(f"{bad}: {problem}" for bad, problem in skipped)
            + "); expected at least one complete checkpoint, or a new --output_dir."
        )
    return None


def resume_checkpoint(output_dir: str, resume: str | None) -> str | None:
    r"""
    The checkpoint to resume from (`None`: start fresh), read back in full first.

    Without `resume`, a folder that holds checkpoints is refused, so they are never overwritten. With
    `"latest"`, a damaged newest checkpoint is skipped (with a warning) for the newest one that reads back; a named
    checkpoint (a path, or a folder name inside `output_dir`) must read back.
    """
    if resume is None:
        checkpoints = find_checkpoints(output_dir)
        if checkpoints:
            raise ValueError(
                f"--output_dir {output_dir!r} holds checkpoints ({os.path.basename(checkpoints[-1])} is the latest); "
                "pass --resume_from_checkpoint latest to continue, or choose a new --output_dir."
            )
        return None
    if resume == "latest":
        return latest_readable_checkpoint(output_dir)
    for candidate in (resume, os.path.join(output_dir, resume)):
        if os.path.isfile(os.path.join(candidate, CHECKPOINT_STATE_FILE)):
            problem = checkpoint_problem(candidate)
            if problem is not None:
                raise ValueError(
                    f"--resume_from_checkpoint {resume!r}: {candidate} cannot be read back ({problem}); "
                    "expected a complete checkpoint (an earlier one, or 'latest' for the newest one that reads back)."
                )
            return candidate
    raise ValueError(
        f"--resume_from_checkpoint {resume!r} is not a checkpoint (no {CHECKPOINT_STATE_FILE} in it or "
        f"in {os.path.join(output_dir, resume)!r}); expected 'latest' or a checkpoint-N folder."
    )


def prepare_run_folder(args: argparse.Namespace) -> str | None:
    r"""
    Check `--output_dir` ([`check_output_dir`]) and return the checkpoint that `--resume_from_checkpoint` names
    ([`resume_checkpoint`]); nothing is written.
    """
    check_output_dir(args.output_dir)
    return resume_checkpoint(args.output_dir, args.resume_from_checkpoint)


def save_checkpoint(accelerator: Accelerator, output_dir: str, global_step: int, total_limit: int | None) -> str:
    r"""
    Save the full training state as `output_dir/checkpoint-{global_step}`, atomically.

    The state goes to `checkpoint-N.tmp` first, which becomes `checkpoint-N` (holding `training_state.json`) by a
    rename once complete, so a crash mid-write never leaves a broken latest checkpoint. Older checkpoints beyond
    `total_limit` are removed only after the new one is complete (renamed `.deleting` first), and so are the
    leftovers of killed saves and prunings ([`checkpoint_leftovers`]).
    """
    final = os.path.join(output_dir, f"checkpoint-{global_step}")
    tmp = final + ".tmp"
    if accelerator.is_main_process and os.path.exists(tmp):
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with open(os.path.join(tmp, CHECKPOINT_STATE_FILE), "w") as f:
            json.dump({"global_step": global_step}, f)
        if os.path.exists(final):
            remove_checkpoint(final)
        os.replace(tmp, final)
        prune_checkpoints(output_dir, total_limit)
        logger.info(f"Saved state to {final}")
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, resume_path: str | None) -> int:
    """Restore the training state saved by [`save_checkpoint`] in `resume_path`; returns its step (0: no resume)."""
    if resume_path is None:
        return 0
    accelerator.print(f"Resuming from checkpoint {resume_path}")
    accelerator.load_state(resume_path)
    with open(os.path.join(resume_path, CHECKPOINT_STATE_FILE)) as f:
        return json.load(f)["global_step"]


def save_final_pipeline(pipeline: DiffusionPipeline, output_dir: str) -> None:
    r"""
    Write `pipeline` into `output_dir` as checkpoints are written: complete first, then swapped in.

    The pipeline is saved whole to `output_dir/.pipeline.tmp`. Then the old `model_index.json` is removed (from here
    on the folder holds no loadable pipeline: `from_pretrained` refuses it), each component folder is replaced by
    its new version (the old one parked in `.pipeline.old`), and the new `model_index.json` is moved in last. A
    kill at any moment therefore leaves the old pipeline, the new one, or none that loads, never the new UNet beside
    the old text encoder; the next save (e.g. a resumed run) clears what a killed one left.
    """
    staging = os.path.join(output_dir, PIPELINE_STAGING_NAME)
    retired = os.path.join(output_dir, PIPELINE_RETIRED_NAME)
    for leftover in (staging, retired):
        if os.path.exists(leftover):
            shutil.rmtree(leftover)
    pipeline.save_pretrained(staging)
    index = os.path.join(output_dir, "model_index.json")
    if os.path.exists(index):
        os.remove(index)
    os.makedirs(retired)
    for name in sorted(os.listdir(staging)):
        if name == "model_index.json":
            continue
        target = os.path.join(output_dir, name)
        if os.path.exists(target):
            os.replace(target, os.path.join(retired, name))
        os.replace(os.path.join(staging, name), target)
    os.replace(os.path.join(staging, "model_index.json"), index)
    shutil.rmtree(retired)
    os.rmdir(staging)


def public_args(args: argparse.Namespace) -> dict:
    """The arguments as JSON values, without the Hub token."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(args).items() if k != "hub_token"}


def tracker_config(args: argparse.Namespace) -> dict:
    """The arguments as scalars and strings (what TensorBoard's hparams accept)."""
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in public_args(args).items()}


def write_training_args(args: argparse.Namespace) -> None:
    """Save the arguments as `training_args.json` in the output folder (also the marker that the folder is ours)."""
    with open(os.path.join(args.output_dir, TRAINING_ARGS_FILE), "w") as f:
        json.dump(public_args(args), f, indent=2)


def write_eval_results(output_dir: str, results: dict) -> None:
    """Save a run's final metrics as `eval_results.json` in `output_dir` (also the marker that the folder is ours)."""
    with open(os.path.join(output_dir, EVAL_RESULTS_FILE), "w") as f:
        json.dump(results, f, indent=2)
