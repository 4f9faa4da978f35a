"""Benchmark: concurrent users of the demo's Generate endpoint through gradio_client; latency and throughput.

Each user fetches the grid shown in the page and every download (grid.png and each image) over one HTTP connection,
as a browser tab does. `--gradio_client_downloads` lets gradio_client download them instead: it opens a new HTTP
client (with a new TLS context) for every file, about 0.03 s of CPU each here, which on a shared 2-core machine is
taken from the demo being measured.
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from gradio_client import Client

from mnist_diffusion.demo.models import DEFAULT_GUIDANCE, DEFAULT_STEPS, FEW_STEP


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", help="A running demo to load; by default one is started (mnist-diffusion demo).")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the started demo (default 2).")
    parser.add_argument("--users", type=int, default=20, help="Concurrent users (default 20).")
    parser.add_argument("--images", type=int, default=16, help="Images per request (default 16).")
    parser.add_argument(
        "--scheduler",
        default=FEW_STEP,
        choices=list(DEFAULT_STEPS),
        help=f"The Generate tab's sampler (default {FEW_STEP!r}, the demo's default).",
    )
    parser.add_argument(
        "--steps", type=int, help="Denoising steps (default: the demo's for the sampler, 4 few-step, 20 the others)."
    )
    parser.add_argument("--guidance", type=float, help="Guidance scale (default: the demo's for the sampler).")
    parser.add_argument("--target_p95", type=float, default=10.0, help="Goal for the p95 latency in seconds.")
    parser.add_argument(
        "--gradio_client_downloads",
        action="store_true",
        help="Let gradio_client download the files (a new HTTP client per file) instead of one connection per user.",
    )
    return parser.parse_args()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_demo(threads: int) -> tuple[subprocess.Popen, str]:
    """`mnist-diffusion demo` on a free 127.0.0.1 port, once it answers."""
    port = free_port()
    command = [sys.executable, "-m", "mnist_diffusion.cli", "demo", "--port", str(port), "--threads", str(threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(240):
        if process.poll() is not None:
            raise RuntimeError(f"The demo exited with code {process.returncode}.")
        try:
            Client(url, verbose=False)
            return process, url
        except Exception:  # not up yet
            time.sleep(0.5)
    process.terminate()
    raise RuntimeError(f"The demo did not answer at {url} within 2 minutes.")


def percentile(values: list[float], q: float) -> float:
    """The `q`-th percentile (nearest rank) of `values`."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process `pid` from /proc (None where there is no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class User:
    """One user: a gradio_client session and, unless gradio_client downloads the files, one HTTP connection."""

    def __init__(self, url: str, gradio_client_downloads: bool):
        self.client = Client(url, verbose=False, download_files=gradio_client_downloads)
        self.http = None if gradio_client_downloads else httpx.Client(timeout=60)

    def fetch(self, output) -> None:
        """Check that a file output arrived: downloaded by gradio_client, or fetched here (a PNG)."""
        if self.http is None:
            if not Path(output).is_file():
                raise RuntimeError(f"{output} was not downloaded")
            return
        response = self.http.get(output["url"])
        response.raise_for_status()
        if not response.content.startswith(b"\x89PNG"):
            raise RuntimeError(f"{output['url']} is not a PNG")


def main() -> None:
    args = parse_args()
    args.steps = DEFAULT_STEPS[args.scheduler] if args.steps is None else args.steps
    args.guidance = DEFAULT_GUIDANCE[args.scheduler] if args.guidance is None else args.guidance
    process, url = (None, args.url) if args.url else start_demo(args.threads)
    try:
        settings = ("", "7", args.scheduler, args.steps, args.guidance)

        def request(user: User, seed: int) -> float:
            start = time.perf_counter()
            grid, files, _, _ = user.client.predict(*settings, seed, args.images, api_name="/generate")
            if len(files) != args.images + 1:
                raise RuntimeError(f"got {len(files)} files, expected {args.images} images and the grid")
            for output in [grid, *files]:
                user.fetch(output)
            return time.perf_counter() - start

        warm = User(url, args.gradio_client_downloads)
        request(warm, 0)  # first call: allocations, lazy imports
        alone = statistics.median(request(warm, seed) for seed in range(1, 4))

        clients = [User(url, args.gradio_client_downloads) for _ in range(args.users)]
        barrier = threading.Barrier(args.users)
        latencies: list[float] = []
        failures: list[str] = []

        def user(i: int) -> None:
            barrier.wait()
            try:
                latencies.append(request(clients[i], 1000 + i))
            except Exception as error:
                failures.append(f"user {i}: {type(error).__name__}: {error}")

        threads = [threading.Thread(target=user, args=(i,)) for i in range(args.users)]
        server_cpu = None if process is None else cpu_seconds(process.pid)
        start, client_cpu = time.perf_counter(), time.process_time()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall, client_cpu = time.perf_counter() - start, time.process_time() - client_cpu
        if server_cpu is not None:
            server_cpu = cpu_seconds(process.pid) - server_cpu
    finally:
        if process is not None:
            process.terminate()
            process.wait()

    images = args.images * len(latencies)
    print(
        f"{args.users} users x {args.images} images, sampler {args.scheduler} with {args.steps} steps, guidance "
        f"{args.guidance:g}, demo torch threads {args.threads if process else 'as served'}"
    )
    how = "gradio_client (a new HTTP client per file)" if args.gradio_client_downloads else "one connection per user"
    print(f"files fetched: the page's grid, grid.png and each image, by {how}")
    print(f"one request alone (median of 3): {alone:.2f} s")
    print(f"succeeded {len(latencies)}/{args.users}, failed {len(failures)}")
    for failure in failures:
        print(f"  {failure}")
    if latencies:
        p50, p95 = statistics.median(latencies), percentile(latencies, 95)
        print(f"latency p50 {p50:.2f} s, p95 {p95:.2f} s, max {max(latencies):.2f} s (p95 = {p95 / alone:.1f}x alone)")
        print(f"throughput {images / wall:.1f} images/s ({images} images in {wall:.2f} s)")
        server = "" if server_cpu is None else f"demo {server_cpu:.1f} s, "
        print(f"CPU time while the users ran: {server}load-test clients {client_cpu:.1f} s ({os.cpu_count()} cores)")
        met = not failures and p95 < args.target_p95
        print(f"goal (none fail, p95 < {args.target_p95:g} s): {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
