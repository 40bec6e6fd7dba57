"""Call statistics of one partition's step, for its Dagster metadata."""

from __future__ import annotations

import threading

from collections import Counter

from .protocol import LLMCallFailed, LLMReply, ReplyRejected


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class CallStats:
    """Thread-safe tally of LLM calls: requests sent, cache hits, failures, latency, tokens in, out and reasoning."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0
        self.cache_hits = 0
        self.failures = 0
        self.rejected = 0
        self.errors: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.tokens = 0
        self.prompt_tokens = 0
        self.reasoning_tokens = 0
        self.eval_seconds = 0.0

    def record(self, reply: LLMReply) -> None:
        with self._lock:
            if reply.cached:
                self.cache_hits += 1
                return
            self.calls += reply.attempts
            self.latencies.append(reply.latency_s)
            self.tokens += reply.eval_count
            self.prompt_tokens += reply.prompt_tokens
            self.reasoning_tokens += reply.reasoning_tokens
            self.eval_seconds += reply.eval_duration_s

    def record_failure(self, error: LLMCallFailed) -> None:
        """A call that got no usable reply: a failed request, or a reply the checks rejected (the model's doing)."""
        with self._lock:
            self.calls += error.attempts
            if isinstance(error, ReplyRejected):
                self.rejected += 1
            else:
                self.failures += 1
            self.errors[str(error).split(": ", 1)[-1][:120]] += 1

    def top_error(self) -> str:
        with self._lock:
            if not self.errors:
                return ""
            (text, n), = self.errors.most_common(1)
            return f"{text} ({n}×)"

    def summary(self, prefix: str) -> dict[str, float | int]:
        with self._lock:
            return {
                f"{prefix}_llm_calls": self.calls,
                f"{prefix}_cache_hits": self.cache_hits,
                f"{prefix}_failed_requests": self.failures,
                f"{prefix}_rejected_replies": self.rejected,
                f"{prefix}_answered": len(self.latencies) + self.cache_hits,
                f"{prefix}_latency_p50_s": round(percentile(self.latencies, 0.5), 3),
                f"{prefix}_latency_p95_s": round(percentile(self.latencies, 0.95), 3),
                f"{prefix}_tokens_in": self.prompt_tokens,
                f"{prefix}_tokens_out": self.tokens,
                f"{prefix}_reasoning_tokens": self.reasoning_tokens,
                f"{prefix}_tokens_per_second": round(self.tokens / self.eval_seconds, 1) if self.eval_seconds else 0.0,
            }
