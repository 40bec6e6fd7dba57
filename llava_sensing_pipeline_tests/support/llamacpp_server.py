"""llama.cpp's own HTTP server (through ``xllamacpp``) serving the SmolLM2-135M test model on loopback.

It speaks llama.cpp's OpenAI-compatible API (``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``, ...)
plus ``/health``, ``/props``, ``/slots`` and the Prometheus ``/metrics``, for end-to-end tests::

    with LlamaCppServer(parallel=2) as server:
        openai.OpenAI(base_url=server.url, api_key="unused")   # server.url == "http://127.0.0.1:<port>/v1"
        server.metrics()["llamacpp:tokens_predicted_total"]

How xllamacpp serves HTTP (read from its source and checked against the installed wheel): constructing
``xllamacpp.Server(params)`` starts llama.cpp's HTTP listener on ``params.hostnames``/``params.port`` in a
background thread, loads the model, and returns once both are ready; ``Server.listening_address`` is then
``"http://127.0.0.1:<port>"`` (with ``port = 0`` llama.cpp binds a free port itself and reports it there). There is
no stop method: dropping the last reference to the ``Server`` (``del server``) terminates its main loop, stops the
listener and frees the model and KV cache. That deletion, however, holds the GIL and blocks until every in-flight
HTTP request's client has disconnected (llama.cpp's handlers only give up when their client goes away), so it
deadlocks outright when the client is a thread of the same process and stalls for the client's timeout otherwise.

This module therefore runs the ``xllamacpp.Server`` in a child process (this module's CLI in ``--managed`` mode):
``stop()`` ends that process (SIGTERM, whose default action needs no GIL; SIGKILL as a fallback), which frees the
port, the model and every thread at once, even with requests in flight (their clients see the connection drop).
The child also exits by itself when its parent dies (it watches its stdin, a pipe from the parent), so a killed
test run leaves no server behind.

Run one by hand (serves until Ctrl+C)::

    python -m llava_sensing_pipeline_tests.support.llamacpp_server --port 8080 --parallel 4
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from llava_sensing_pipeline_tests.support.model_fetch import ensure_test_model

HOST = "127.0.0.1"
DEFAULT_ALIAS = "smollm2:135m"
DEFAULT_PARALLEL = 2
DEFAULT_CTX_PER_SLOT = 8192
DEFAULT_THREADS = max(1, (os.cpu_count() or 2) // 2)
"""Engine CPU threads: half the cores, like ``ollama_test_server.DEFAULT_THREADS``."""
DEFAULT_STARTUP_TIMEOUT_S = 120.0
DEFAULT_STOP_TIMEOUT_S = 10.0
MODULE = "llava_sensing_pipeline_tests.support.llamacpp_server"
READY_PREFIX = "LLAMACPP_SERVER_READY "
"""The managed child prints this, then a JSON object, on one line of stdout once it is listening."""

_METRIC_LINE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*(?:\{[^}]*\})?)\s+(?P<value>\S+)")


class LlamaCppServerError(RuntimeError):
    """The llama.cpp server could not be started, or answered in an unexpected way."""


def parse_prometheus_text(text: str) -> dict[str, float]:
    """``{metric name (with its ``{labels}`` if any): value}`` from Prometheus text exposition format."""
    metrics: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _METRIC_LINE.match(line)
        if match is None:
            continue
        try:
            metrics[match["name"]] = float(match["value"])
        except ValueError:
            continue
    return metrics


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether a server could listen on ``host:port`` now (checked with ``SO_REUSEADDR``, as llama.cpp binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
            probe.listen(1)
        except OSError:
            return False
    return True


def port_accepts_connections(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class LlamaCppServer:
    """llama.cpp's HTTP server for ``model_path`` on ``127.0.0.1``, in a child process; a context manager.

    ``parallel`` slots of ``ctx_per_slot`` tokens each (llama.cpp splits ``n_ctx = parallel * ctx_per_slot``
    evenly over the slots; a request whose prompt exceeds one slot's context is refused with HTTP 400).
    ``port=0`` lets llama.cpp bind a free port itself (no race between choosing and binding); the actual port is
    :attr:`port` once started. ``model_path=None`` uses :func:`ensure_test_model` (downloaded once if needed).
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        alias: str = DEFAULT_ALIAS,
        parallel: int = DEFAULT_PARALLEL,
        ctx_per_slot: int = DEFAULT_CTX_PER_SLOT,
        threads: int = DEFAULT_THREADS,
        port: int = 0,
        startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
        stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
    ) -> None:
        if parallel < 1 or ctx_per_slot < 1 or threads < 1:
            raise ValueError(f"parallel ({parallel}), ctx_per_slot ({ctx_per_slot}) and threads ({threads}) "
                             "must be at least 1")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0 (any free port) or 1..65535, not {port}")
        self.model_path = Path(model_path) if model_path is not None else None
        self.alias = alias
        self.parallel = parallel
        self.ctx_per_slot = ctx_per_slot
        self.threads = threads
        self.requested_port = port
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._port: int | None = None

    # ------------------------------------------------------------------ life cycle

    @property
    def n_ctx(self) -> int:
        """Total context given to llama.cpp: ``parallel * ctx_per_slot``."""
        return self.parallel * self.ctx_per_slot

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id of the server process while started."""
        return self._proc.pid if self._proc is not None else None

    @property
    def port(self) -> int:
        """The port llama.cpp listens on (only once started)."""
        if self._port is None:
            raise LlamaCppServerError("the llama.cpp server is not started; call start() or use it as a context manager")
        return self._port

    @property
    def root(self) -> str:
        """``http://127.0.0.1:<port>``: llama.cpp's own endpoints (``/health``, ``/metrics``, ``/props``...)."""
        return f"http://{HOST}:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>/v1``: the OpenAI-compatible base URL."""
        return f"{self.root}/v1"

    def child_command(self) -> list[str]:
        """The command line of the managed server process."""
        model_path = self.model_path if self.model_path is not None else ensure_test_model()
        return [
            sys.executable, "-m", MODULE, "--managed", "--model-path", str(model_path), "--alias", self.alias, "--port", str(self.requested_port),
            "--parallel", str(self.parallel), "--ctx-per-slot", str(self.ctx_per_slot), "--threads", str(self.threads),
        ]

    def start(self) -> LlamaCppServer:
        """Start the server process and wait (bounded by ``startup_timeout_s``) until ``GET /health`` is 200."""
        if self._proc is not None:
            raise LlamaCppServerError(f"the llama.cpp server is already started on {self.root}")
        if self.model_path is not None and not self.model_path.is_file():
            raise FileNotFoundError(f"Model file {self.model_path} does not exist; pass an existing GGUF path or "
                                    "omit it to use ensure_test_model().")
        if self.requested_port and not port_is_free(self.requested_port):
            raise LlamaCppServerError(f"port {self.requested_port} on {HOST} is already in use; pick another "
                                      "port or pass port=0 for a free one")
        command = self.child_command()  # may download the test model first
        deadline = time.monotonic() + self.startup_timeout_s
        self._log = tempfile.TemporaryFile(prefix="llamacpp-server-", suffix=".log")
        env = dict(os.environ)
        # The child imports this package; make sure it finds the same copy whatever its working directory.
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        self._proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._log, env=env)
        try:
            ready = self._read_ready_line(deadline)
            self._port = int(ready["port"])
            self._wait_healthy(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _read_ready_line(self, deadline: float) -> dict[str, Any]:
        """The JSON object of the child's ready line; raises with the child's log when it dies or times out."""
        assert self._proc is not None and self._proc.stdout is not None
        stdout = self._proc.stdout
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            while b"\n" not in buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LlamaCppServerError(
                        f"the llama.cpp server did not start within {self.startup_timeout_s:.0f} s"
                        f"{self._log_tail_note()}")
                if not selector.select(min(remaining, 0.5)):
                    continue
                chunk = os.read(stdout.fileno(), 4096)
                if not chunk:
                    code = self._proc.wait(timeout=5)
                    raise LlamaCppServerError(
                        f"the llama.cpp server process exited with code {code} before it was ready"
                        f"{self._log_tail_note()}")
                buffer += chunk
        line = buffer.split(b"\n", 1)[0].decode("utf-8", "replace")
        if not line.startswith(READY_PREFIX):
            raise LlamaCppServerError(f"unexpected first line from the llama.cpp server process: {line!r}"
                                      f"{self._log_tail_note()}")
        return json.loads(line[len(READY_PREFIX):])

    def _wait_healthy(self, deadline: float) -> None:
        last = "no answer yet"
        while True:
            try:
                status, body = self.request("GET", "/health", timeout=2.0)
                if status == 200:
                    return
                last = f"HTTP {status}: {body!r}"
            except OSError as exc:
                last = repr(exc)
            if not self.running:
                raise LlamaCppServerError(f"the llama.cpp server process exited while starting (last /health: "
                                          f"{last}){self._log_tail_note()}")
            if time.monotonic() >= deadline:
                raise LlamaCppServerError(f"GET {self.root}/health did not answer 200 within "
                                          f"{self.startup_timeout_s:.0f} s (last: {last}){self._log_tail_note()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """End the server process (SIGTERM, then SIGKILL after ``stop_timeout_s``) and wait until its port no
        longer accepts connections. In-flight requests are cut off. Safe to call more than once."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        port = self._port
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        if port is not None:
            deadline = time.monotonic() + 5.0
            while port_accepts_connections(port, timeout=0.2):
                if time.monotonic() >= deadline:
                    raise LlamaCppServerError(f"port {port} still accepts connections after the llama.cpp server "
                                              f"process {proc.pid} exited")
                time.sleep(0.05)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        """What the server process wrote to stderr so far (llama.cpp's log is mostly silenced)."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def _log_tail_note(self) -> str:
        tail = self.log_text().strip()[-3000:]
        return f"; its log ends with:\n{tail}" if tail else ""

    def __enter__(self) -> LlamaCppServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.root if self._port is not None else "not started"
        return (f"LlamaCppServer({where}, alias={self.alias!r}, parallel={self.parallel}, "
                f"ctx_per_slot={self.ctx_per_slot}, threads={self.threads})")

    # ------------------------------------------------------------------ HTTP helpers

    def request(self, method: str, path: str, body: Any = None, timeout: float = 120.0) -> tuple[int, Any]:
        """``(HTTP status, parsed JSON body, or the text when it is not JSON)`` of ``method path`` on
        :attr:`root`; HTTP errors are returned, not raised. ``body`` (if given) is sent as JSON."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        req = urllib.request.Request(self.root + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        text = raw.decode("utf-8", "replace")
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def chat(self, messages: list[dict[str, Any]], timeout: float = 120.0, **fields: Any) -> tuple[int, Any]:
        """POST ``/v1/chat/completions`` with ``model`` = the alias, ``messages`` and any other ``fields``."""
        return self.request("POST", "/v1/chat/completions",
                            {"model": self.alias, "messages": messages, **fields}, timeout=timeout)

    def models(self) -> list[dict[str, Any]]:
        """The ``data`` list of ``GET /v1/models`` (one entry, ``id`` = the alias)."""
        status, body = self.request("GET", "/v1/models", timeout=10.0)
        if status != 200:
            raise LlamaCppServerError(f"GET /v1/models answered HTTP {status}: {body!r}")
        return body["data"]

    def metrics(self) -> dict[str, float]:
        """``GET /metrics`` parsed: ``{"llamacpp:prompt_tokens_total": ..., "llamacpp:tokens_predicted_total":
        ..., "llamacpp:requests_processing": ..., ...}``."""
        status, body = self.request("GET", "/metrics", timeout=10.0)
        if status != 200 or not isinstance(body, str):
            raise LlamaCppServerError(f"GET /metrics answered HTTP {status}: {body!r}")
        return parse_prometheus_text(body)

    def props(self) -> dict[str, Any] | None:
        """``GET /props`` (``default_generation_settings.n_ctx`` is the per-slot context, ``total_slots`` the
        number of slots, ``model_alias``, ``model_path``, ``chat_template``, ...), or None where it is missing."""
        status, body = self.request("GET", "/props", timeout=10.0)
        if status == 404:
            return None
        if status != 200 or not isinstance(body, dict):
            raise LlamaCppServerError(f"GET /props answered HTTP {status}: {body!r}")
        return body


# ---------------------------------------------------------------------- the server process


def build_engine(model_path: Path, *, alias: str, port: int, parallel: int, ctx_per_slot: int, threads: int,
                 verbosity: int = -1) -> Any:
    """Construct ``xllamacpp.Server``: llama.cpp's HTTP server listening on ``127.0.0.1:port`` (0 = any free
    port) with the model loaded. Keep the returned object alive for as long as it should serve."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(model_path)
    if isinstance(params.model_alias, (set, frozenset)):  # a set of names in recent xllamacpp, a str before
        params.model_alias = {alias}
    else:
        params.model_alias = alias
    params.hostnames = [HOST]
    params.port = port
    params.n_parallel = parallel
    params.n_ctx = parallel * ctx_per_slot
    params.cont_batching = True
    params.endpoint_metrics = True
    params.cache_prompt = True
    params.ctx_shift = False  # the default; a reply that reaches the slot's context ends with "length"
    params.verbosity = verbosity
    for cpu_params in (params.cpuparams, params.cpuparams_batch):
        cpu_params.n_threads = threads
        cpu_params.poll = 0
    # Upstream llama.cpp installs its own SIGINT/SIGTERM handlers when the server starts; put Python's back.
    saved = ({sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
             if threading.current_thread() is threading.main_thread() else {})
    engine = xllamacpp.Server(params)
    for sig, handler in saved.items():
        if handler is not None:
            signal.signal(sig, handler)
    return engine


def _exit_when_stdin_closes() -> None:
    """Managed mode: the parent holds our stdin open; EOF means it stopped us or died."""
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except OSError:
        pass
    os._exit(0)


def build_arg_parser() -> argparse.ArgumentParser:
    """Command-line options of the server."""
    parser = argparse.ArgumentParser(
        prog="python -m llava_sensing_pipeline_tests.support.llamacpp_server",
        description="llama.cpp's own OpenAI-compatible HTTP server (xllamacpp) on 127.0.0.1, serving the "
                    "SmolLM2-135M test model. A development and test tool, not for production.",
    )
    parser.add_argument("--port", type=int, default=8080, help="0 = any free port (default 8080)")
    parser.add_argument("--model-path", type=Path, default=None,
                        help="GGUF file (default: the SmolLM2-135M test model, downloaded if needed)")
    parser.add_argument("--alias", default=DEFAULT_ALIAS, help=f"model name served (default {DEFAULT_ALIAS})")
    parser.add_argument("--parallel", type=int, default=DEFAULT_PARALLEL, help="slots (concurrent requests)")
    parser.add_argument("--ctx-per-slot", type=int, default=DEFAULT_CTX_PER_SLOT, help="context tokens per slot")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="engine CPU threads (default: half "
                        "the cores)")
    parser.add_argument("--verbosity", type=int, default=-1, help="llama.cpp log verbosity (-1 = quiet)")
    parser.add_argument("--managed", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Serve until Ctrl+C or SIGTERM (or, with ``--managed``, until stdin closes)."""
    args = build_arg_parser().parse_args(argv)
    model_path = args.model_path if args.model_path is not None else ensure_test_model()
    try:
        engine = build_engine(model_path, alias=args.alias, port=args.port, parallel=args.parallel,
                              ctx_per_slot=args.ctx_per_slot, threads=args.threads, verbosity=args.verbosity)
    except RuntimeError as exc:  # xllamacpp says only "Failed to init server, please check the input params."
        sys.exit(f"llama.cpp could not start serving {model_path} on {HOST}:{args.port}: {exc}"
                 + (" Rerun with --verbosity 3 to see llama.cpp's own log." if args.verbosity < 3 else ""))
    address = engine.listening_address
    port = int(address.rsplit(":", 1)[1])
    # Deleting ``engine`` would block until every in-flight request's client disconnects, so this process
    # never deletes it: it exits, which frees the port and the model at once. SIGTERM keeps its default action
    # (immediate termination, no GIL needed, so it works even while llama.cpp holds the GIL).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if args.managed:
        print(READY_PREFIX + json.dumps({"listening_address": address, "port": port, "pid": os.getpid()}),
              flush=True)
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # nothing more goes to the parent's pipe
        threading.Thread(target=_exit_when_stdin_closes, name="stdin-watch", daemon=True).start()
    else:
        print(f"llama.cpp server ({args.alias}, {args.parallel} slots x {args.ctx_per_slot} tokens) listening "
              f"on {address} (OpenAI base URL {address}/v1); Ctrl+C stops it", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        if not args.managed:
            print("stopped", flush=True)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
