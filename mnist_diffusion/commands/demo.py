"""`mnist-diffusion demo`: serve the Gradio demo (generate, watch the denoising, the forward process, draw)."""

from __future__ import annotations

import argparse

from ..loading import check_model_argument


def demo(args: argparse.Namespace) -> None:
    """Serve the demo on `args.host:args.port` until interrupted."""
    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port is {args.port}; expected a port number in 1..65535.")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads is {args.threads}; expected at least 1.")
    check_model_argument(args.model)
    try:
        from ..demo import launch
    except ImportError as error:
        raise ValueError(f'The demo needs Gradio ({error}); install it with `pip install -e ".[demo]"`.') from None
    launch(port=args.port, host=args.host, model=args.model, threads=args.threads)


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `demo` subcommand to the `mnist-diffusion` parser."""
    parser = commands.add_parser("demo", help="Serve the Gradio demo in the browser (needs the [demo] extra).")
    parser.add_argument("--port", type=int, default=7860, help="Port (default 7860).")
    parser.add_argument(
        "--host", default="127.0.0.1", help="Address to listen on (default 127.0.0.1; 0.0.0.0 serves the network)."
    )
    parser.add_argument(
        "--model", help="A saved pipeline: local folder or Hub repo id (default: the released model, shipped offline)."
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2).")
    parser.set_defaults(func=demo)
