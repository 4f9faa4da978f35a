"""Benchmark: concurrent users of the demo's Generate endpoint through gradio_client; latency and throughput."""

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

from gradio_client import Client


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", help="A running demo to load; by default one is started (mnist-diffusion demo).")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the started demo (default 2).")
    parser.add_argument("--users", type=int, default=20, help="Concurrent users (default 20).")
    parser.add_argument("--images", type=int, default=16, help="Images per request (default 16).")
    parser.add_argument("--steps", type=int, default=20, help="Denoising steps (default 20, the demo's default).")
    parser.add_argument("--scheduler", default="DPM-Solver++", help="DPM-Solver++ (default), DDIM or DDPM.")
    parser.add_argument("--guidance", type=float, default=1.4, help="Guidance scale (default 1.4).")
    parser.add_argument("--target_p95", type=float, default=10.0, help="Goal for the p95 latency in seconds.")
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


def main() -> None:
    args = parse_args()
    process, url = (None, args.url) if args.url else start_demo(args.threads)
    try:
        settings = ("", "7", args.scheduler, args.steps, args.guidance)

        def request(client: Client, seed: int) -> float:
            start = time.perf_counter()
            _, files, _, _ = client.predict(*settings, seed, args.images, api_name="/generate")
            if len(files) != args.images + 1:
                raise RuntimeError(f"got {len(files)} files, expected {args.images} images and the grid")
            return time.perf_counter() - start

        warm = Client(url, verbose=False)
        request(warm, 0)  # first call: allocations, lazy imports
        alone = statistics.median(request(warm, seed) for seed in range(1, 4))

        clients = [Client(url, verbose=False) for _ in range(args.users)]
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
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - start
    finally:
        if process is not None:
            process.terminate()
            process.wait()

    images = args.images * len(latencies)
    print(
        f"{args.users} users x {args.images} images, {args.scheduler}-{args.steps}, guidance {args.guidance:g}, "
        f"demo torch threads {args.threads if process else 'as served'}"
    )
    print(f"one request alone (median of 3): {alone:.2f} s")
    print(f"succeeded {len(latencies)}/{args.users}, failed {len(failures)}")
    for failure in failures:
        print(f"  {failure}")
    if latencies:
        p50, p95 = statistics.median(latencies), percentile(latencies, 95)
        print(f"latency p50 {p50:.2f} s, p95 {p95:.2f} s, max {max(latencies):.2f} s (p95 = {p95 / alone:.1f}x alone)")
        print(f"throughput {images / wall:.1f} images/s ({images} images in {wall:.2f} s)")
        met = not failures and p95 < args.target_p95
        print(f"goal (none fail, p95 < {args.target_p95:g} s): {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
