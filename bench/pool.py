"""Two Ollama hosts versus one, on the fixed-latency scripted test server (README, "Scaling out").

    python bench/pool.py [--requests 48] [--latency 0.25] [--slots 2]

Sends the same number of distinct requests through ``OllamaResource`` with as many threads as the pool has slots,
first to one host, then to a pool of two; prints both wall times, the speed-up and how the pool split the work.
"""

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test server lives in the tests package

from llava_sensing_pipeline_tests.support.ollama_test_server import OllamaTestServer  # noqa: E402
from llava_sensing_pipeline.llm import OllamaResource  # noqa: E402


def timed_run(urls: list[str], slots: int, n: int) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        pool = OllamaResource(host=",".join(urls), model="smollm2:135m", parallel=slots,
                              cache_path=f"{tmp}/cache.sqlite")
        pool.check_ready()
        started = time.monotonic()
        with ThreadPoolExecutor(pool.total_slots) as threads:
            list(threads.map(lambda i: pool.chat([{"role": "user", "content": f"request {i}"}], options={}),
                             range(n)))
        return time.monotonic() - started, pool.host_metadata()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--latency", type=float, default=0.25)
    parser.add_argument("--slots", type=int, default=2, help="slots per host (OLLAMA_NUM_PARALLEL)")
    args = parser.parse_args()
    servers = [OllamaTestServer(backend="scripted", latency=args.latency, parallel=args.slots).start()
               for _ in range(2)]
    try:
        one, _ = timed_run([servers[0].url], args.slots, args.requests)
        two, hosts = timed_run([s.url for s in servers], args.slots, args.requests)
    finally:
        for server in servers:
            server.stop()
    print(f"| hosts | wall time (s) | requests per host |\n|---|---|---|\n| 1 | {one:.2f} | {args.requests} |\n"
          f"| 2 | {two:.2f} | {' / '.join(str(h['requests']) for h in hosts.values())} |\n"
          f"speed-up {one / two:.2f}x ({args.requests} requests, {args.latency} s latency, {args.slots} slots per host)")


if __name__ == "__main__":
    main()
