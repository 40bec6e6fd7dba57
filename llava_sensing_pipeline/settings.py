"""Run settings shared by every asset, as a Dagster resource.

The CLI builds it from its flags; ``dagster dev`` builds it from ``LLAVA_SENSING_*`` environment variables
(see :func:`settings_from_env`), so the UI and the CLI run the same graph with the same defaults.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Literal

from dagster import ConfigurableResource
from pydantic import field_validator

MODES = ("simple", "hybrid", "llm")
DEFAULT_EXAMPLES_PER_FILE = 100


class PipelineSettings(ConfigurableResource):
    """What to read, how to cut it, how to seed it, and how many examples to export."""

    input_dir: str = "Novel"
    output_dir: str = "data/processed"
    mode: Literal["simple", "hybrid", "llm"] = "simple"
    seed: int = 42
    chunk_chars: int = 500
    min_chunk_chars: int = 200
    max_chunk_chars: int = 1000
    min_confidence: float = 0.15
    num_examples: int | None = None
    max_files: int | None = None
    export_chunk_size: int = 100
    # LLM modes (hybrid, llm)
    llm_confidence_threshold: float = 0.3
    analysis_margin: float = 1.25
    max_failure_share: float = 0.25
    generation_attempts: int = 3
    # The request cap: at most this many requests (analysis, generation, retries and resends) per asked example of
    # a file; a file that reaches it stops, and succeeds with a shortfall only if it got min_quota_share of its quota.
    max_requests_per_example: float = 10.0
    min_quota_share: float = 0.5
    min_words: int = 120
    max_words: int = 300
    min_alignment: float = 0.3
    # Export curation (export-only)
    split_ratios: list[float] = [0.8, 0.1, 0.1]
    near_duplicate_threshold: float = 0.8

    @field_validator("split_ratios", mode="before")
    @classmethod
    def _split_ratios_from_text(cls, value: object) -> object:
        """Accepts ``"80,10,10"`` or ``"0.8/0.1/0.1"`` (train, validation, test), e.g. from an environment variable."""
        if isinstance(value, str):
            return [float(part) for part in value.replace("/", ",").split(",") if part.strip()]
        return value

    @field_validator("split_ratios")
    @classmethod
    def _split_ratios_as_shares(cls, value: list[float]) -> list[float]:
        """As shares of one: the CLI's ``80,10,10`` and the default ``0.8/0.1/0.1`` are one setting, with one code
        version, whichever entry point gave it (a value the export cannot use is left for it to explain)."""
        total = sum(value)
        if len(value) != 3 or any(v < 0 for v in value) or total <= 0:
            return value
        return [round(v / total, 12) for v in value]


def chunk_bounds(chunk_chars: int, min_chars: int | None = None, max_chars: int | None = None) -> tuple[int, int]:
    """Default min and max chunk sizes for a target: 40 % and 200 % of it."""
    return (min_chars if min_chars is not None else max(1, int(chunk_chars * 0.4)),
            max_chars if max_chars is not None else chunk_chars * 2)


SETTINGS_FILE = "llava_sensing_settings.json"
"""In ``$DAGSTER_HOME``: the variables of the CLI's last run, so ``dagster dev`` on that home runs the same graph."""


def settings_env(settings: PipelineSettings) -> dict[str, str]:
    """The ``LLAVA_SENSING_<FIELD>`` variables that give ``settings`` (``""`` for a field left at None)."""
    env = {}
    for name in PipelineSettings.model_fields:
        value = getattr(settings, name)
        if isinstance(value, list):
            value = ",".join(f"{v:g}" for v in value)
        env[f"LLAVA_SENSING_{name.upper()}"] = "" if value is None else str(value)
    return env


class SettingsUnreadable(RuntimeError):
    """``$DAGSTER_HOME/llava_sensing_settings.json`` exists but cannot be read: an error in the CLI and in the UI
    (building the definitions from the defaults instead would run another corpus, or another mode)."""


def recorded_env(home: str | None = None) -> dict[str, str]:
    """The variables the CLI recorded in ``$DAGSTER_HOME`` (empty when it has not run there); raises
    :class:`SettingsUnreadable` when the file is there but unreadable or not a JSON object."""
    home = home or os.environ.get("DAGSTER_HOME")
    if not home:
        return {}
    path = Path(home) / SETTINGS_FILE
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        data = exc
    if not isinstance(data, dict):
        why = f"{type(data).__name__}: {data}" if isinstance(data, Exception) else "not a JSON object"
        raise SettingsUnreadable(
            f"{path} cannot be read ({why}). It holds the settings of the last `llava-sensing generate` on this "
            "DAGSTER_HOME, which `dagster dev` uses: delete it (the next generate writes it again) or fix it.")
    return {str(k): str(v) for k, v in data.items()}


def record_env(env: dict[str, str], home: str) -> None:
    """Writes ``env`` to ``$DAGSTER_HOME/llava_sensing_settings.json`` (atomically)."""
    path = Path(home) / SETTINGS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(env, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def effective_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The process environment over what the CLI recorded in ``$DAGSTER_HOME``: what the definitions are built from."""
    env = dict(os.environ if env is None else env)
    return {**recorded_env(env.get("DAGSTER_HOME")), **env}


def settings_from_env(env: dict[str, str] | None = None) -> PipelineSettings:
    """Settings from ``LLAVA_SENSING_<FIELD>`` variables (e.g. ``LLAVA_SENSING_INPUT_DIR``), else the defaults."""
    env = os.environ if env is None else env
    values = {}
    for name in PipelineSettings.model_fields:
        raw = env.get(f"LLAVA_SENSING_{name.upper()}")
        if raw not in (None, ""):
            values[name] = raw
    return PipelineSettings(**values)


def stable_hash(obj: object, length: int = 16) -> str:
    """A short hex digest of a JSON-serialisable object (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:length]
