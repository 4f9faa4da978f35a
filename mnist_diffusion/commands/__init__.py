"""The subcommands of `mnist-diffusion`, one module each, every one exposing `register(subparsers)`."""
