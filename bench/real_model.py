"""The main job with a real model, through each API (issue 21): SmolLM2-135M (the test model, served by xllamacpp
inside the test server, which speaks both Ollama's API and the OpenAI-compatible one), two files of ``Novel/``,
``--num-examples 4``, the relaxed flags a 135M model needs. Then a server whose context is too small.

    python bench/real_model.py [--apis ollama openai] [--parallel 2]

Prints, per API: wall time, the requests the server saw, requests per asked example, the exit status and the
examples exported; then how long a run takes to stop when the server's context (2,048 tokens) cannot hold the
analysis prompt. Several minutes on 2 CPU cores.
"""

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the test server lives in the tests package

from llava_sensing_pipeline.cli import main as cli  # noqa: E402
from llava_sensing_pipeline_tests.support.ollama_test_server import OllamaTestServer  # noqa: E402

RELAXED = ["--min-words", "40", "--max-words", "400", "--min-alignment", "0", "--confidence-threshold", "0"]
ASKED = 4


def run(api: str, server: OllamaTestServer, folder: Path, parallel: int, *extra: str) -> tuple[int, float, str]:
    url = server.url if api == "ollama" else f"{server.url}/v1"
    os.environ.update(DAGSTER_HOME=str(folder / "home"), LLAVA_SENSING_STORAGE_DIR=str(folder / "storage"),
                      LLAVA_SENSING_LLM_CACHE=str(folder / "cache.sqlite"))
    (folder / "home").mkdir(parents=True, exist_ok=True)
    err = io.StringIO()
    started = time.monotonic()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = cli(["generate", "--mode", "llm", "--llm-api", api, "--llm-url", url, "--model", "smollm2:135m",
                  "--input-dir", str(REPO / "Novel"), "--output-dir", str(folder / "out"), "--max-files", "1",
                  "--parallel", str(parallel), *RELAXED, *extra])
    return rc, time.monotonic() - started, err.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apis", nargs="+", default=["ollama", "openai"])
    parser.add_argument("--parallel", type=int, default=2)
    args = parser.parse_args()
    rows = []
    for api in args.apis:
        with tempfile.TemporaryDirectory() as tmp, OllamaTestServer(parallel=args.parallel) as server:
            rc, wall, _ = run(api, server, Path(tmp), args.parallel, "--num-examples", str(ASKED))
            out = Path(tmp) / "out" / "llm_dataset.json"
            exported = len(json.loads(out.read_text(encoding="utf-8"))) if out.exists() else 0
            requests = server.stats()["completions"]
            rows.append(f"| {api} | {wall:.0f} s | {requests} | {requests / ASKED:.1f} | {rc} | {exported} |")
            print(f"{api}: done in {wall:.0f} s", file=sys.stderr)
    stops = []
    for api in args.apis:
        with tempfile.TemporaryDirectory() as tmp, OllamaTestServer(backend="scripted", script="{}",
                                                                    context_tokens=2048) as server:
            rc, wall, err = run(api, server, Path(tmp), args.parallel, "--num-examples", str(ASKED))
            said = next((line.strip() for line in err.splitlines() if line.startswith("The run stopped:")), "?")
            stops.append(f"| {api} | {wall:.1f} s | {rc} | {said[:150]}… |")
    print("| API | wall | requests | per asked example | exit | exported |\n|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("\nContext too small (2,048 tokens):\n\n| API | stopped after | exit | message |\n|---|---|---|---|")
    print("\n".join(stops))


if __name__ == "__main__":
    main()
