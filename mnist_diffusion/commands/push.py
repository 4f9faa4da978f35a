"""`mnist-diffusion push`: upload a saved pipeline to the Hugging Face Hub with its code and model card."""

from __future__ import annotations

import argparse

from .arguments import RefuseToken


def push(args: argparse.Namespace) -> str:
    """Upload the saved pipeline `args.model` to the Hub repo `args.repo_id`: weights, code, model card, samples."""
    from ..hub import push_pipeline_to_hub
    from ..lora_hub import is_lora_folder, push_lora_to_hub

    if is_lora_folder(args.model):  # an adapter of training/train_lora.py: weights, card, samples in one commit
        commit = push_lora_to_hub(
            args.model,
            args.repo_id,
            private=args.private or None,
            revision=args.revision,
            commit_message=args.commit_message,
            create_pr=args.create_pr,
        )
        print(f"Pushed the LoRA adapter {args.model} to {commit.pr_url or commit.commit_url}")
        return commit.oid
    if args.sample_steps < 1:
        raise ValueError(f"--sample-steps is {args.sample_steps}; expected at least 1.")
    commit = push_pipeline_to_hub(
        args.model,
        args.repo_id,
        private=args.private or None,
        revision=args.revision,
        commit_message=args.commit_message,
        create_pr=args.create_pr,
        variant=args.variant,
        delete_missing=args.delete_missing,
        samples=args.samples,
        sample_steps=args.sample_steps,
    )
    print(f"Pushed {args.model} to {commit.pr_url or commit.commit_url}")
    return commit.oid


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `push` subcommand to the `mnist-diffusion` parser; the token comes from `HF_TOKEN` or the login."""
    hub = commands.add_parser(
        "push",
        help="Upload a saved pipeline to the Hugging Face Hub, with a model card.",
        description="Upload a saved pipeline to the Hugging Face Hub, with its code, model card and samples. The "
        "token is read from HF_TOKEN or from `hf auth login`, never from the command line (where other users' "
        "process lists would show it).",
    )
    hub.add_argument(
        "model",
        help="Folder of a pipeline saved with save_pretrained (or by training/train.py), or of a LoRA adapter "
        "(training/train_lora.py).",
    )
    hub.add_argument("--repo-id", required=True, help='Hub repo, e.g. "user/mnist-diffusion"; created if needed.')
    hub.add_argument("--revision", help="Branch to push to, created from main if needed (default main).")
    hub.add_argument("--private", action="store_true", help="Create the repo as private (an existing repo is kept).")
    hub.add_argument("--variant", choices=["fp16", "bf16"], help="Also upload half-precision weights.")
    hub.add_argument("--commit-message", help='Default "Upload MnistDiffusionPipeline".')
    hub.add_argument("--create-pr", action="store_true", help="Open a pull request instead of committing.")
    hub.add_argument(
        "--delete-missing", action="store_true", help="Delete the repo's files that this push does not contain."
    )
    hub.add_argument("--no-samples", dest="samples", action="store_false", help="Do not generate samples.png.")
    hub.add_argument("--sample-steps", type=int, default=50, help="Denoising steps for samples.png (default 50).")
    hub.add_argument("--token", action=RefuseToken, help=argparse.SUPPRESS)
    hub.set_defaults(func=push)
