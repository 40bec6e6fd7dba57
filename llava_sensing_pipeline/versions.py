"""Code versions, derived (the sources are read once per process): each asset's version is a hash of the source of every module of this package that its
asset module imports, directly or through other modules, plus the settings that change what that stage computes.

So editing a module marks exactly the assets whose code imports it as stale (Dagster shows "has a new code
version"), and a setting marks exactly the stages it affects (``--num-examples`` changes ``generated_examples``, not
``text_chunks``). No list of modules is kept by hand: the imports are read from the sources.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import json
from functools import lru_cache

PACKAGE = __name__.rsplit(".", 1)[0]

# The module that defines each asset.
ASSET_MODULES = {
    "novel_files": "assets.novels",
    "text_chunks": "assets.novels",
    "environment_features": "assets.environment",
    "sensor_records": "assets.sensor_records",
    "style_labels": "assets.style",
    "generated_examples": "assets.generation",
    "chunked_json_exports": "assets.export",
}

# The settings each stage's output depends on (see ``settings.PipelineSettings``). ``quotas`` stands for the
# per-file quotas (``num_examples`` spread over the selected files), ``model`` for the LLM and ``llm_api`` for the
# API it is reached through (the cache keys differ, and so may the replies).
LLM_GENERATION = ("llm_confidence_threshold", "generation_attempts", "min_words", "max_words", "min_alignment",
                  "max_failure_share", "model", "llm_api", "max_requests_per_example", "min_quota_share")
STAGE_SETTINGS: dict[str, tuple[str, ...]] = {
    "novel_files": (),
    "text_chunks": ("chunk_chars", "min_chunk_chars", "max_chunk_chars"),
    "environment_features": ("mode", "seed", "min_chunk_chars", "llm_confidence_threshold", "analysis_margin",
                             "max_failure_share", "model", "llm_api", "max_requests_per_example", "min_quota_share",
                             "quotas"),
    "sensor_records": ("seed",),
    "style_labels": (),
    "generated_examples": ("mode", "seed", "min_chunk_chars", "min_confidence", "quotas", *LLM_GENERATION),
    "chunked_json_exports": ("mode", "seed", "input_dir", "output_dir", "num_examples", "max_files",
                             "export_chunk_size", "split_ratios", "near_duplicate_threshold"),
}
# Settings that only matter in the LLM modes (left out of the version in simple mode): simple mode's rule analysis
# depends on neither the quotas nor the seed (its example selection does).
LLM_ONLY = {"llm_confidence_threshold", "analysis_margin", "max_failure_share", *LLM_GENERATION}
LLM_ONLY_FOR = {"environment_features": {"quotas", "seed"}}


@lru_cache(maxsize=None)
def _imports(module_name: str) -> frozenset[str]:
    """The modules of this package that ``module_name`` imports (``from .x import y`` and ``import pkg.x``).
    Cached: a module's source does not change once imported, and parsing every module for each of the seven assets
    cost 0.8 s per build of the definitions, which a Celery worker does for every step."""
    module = importlib.import_module(module_name)
    tree = ast.parse(inspect.getsource(module))
    package = module_name if hasattr(module, "__path__") else module_name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        for name in candidates:
            if name.startswith(PACKAGE + ".") and _is_module(name):
                found.add(name)
    return frozenset(found - {module_name})


@lru_cache(maxsize=None)
def _is_module(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


@lru_cache(maxsize=None)
def module_closure(module_name: str) -> tuple[str, ...]:
    """``module_name`` and every module of this package it imports, transitively, sorted."""
    seen: set[str] = set()
    todo = [module_name]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(_imports(name) - seen)
    return tuple(sorted(n for n in seen if not n.endswith(".__init__") and n != f"{PACKAGE}.assets"))


def _source(name: str) -> bytes:
    return inspect.getsource(importlib.import_module(name)).encode()


@lru_cache(maxsize=None)
def _source_hash(modules: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for name in modules:
        h.update(name.encode() + b"\0" + _source(name) + b"\0")
    return h.hexdigest()


def stage_settings(asset: str, values: dict) -> dict:
    """The settings among ``values`` that ``asset``'s output depends on (LLM-only ones left out in simple mode)."""
    simple = values.get("mode", "simple") == "simple"
    skip = LLM_ONLY | LLM_ONLY_FOR.get(asset, set()) if simple else set()
    return {name: values.get(name) for name in STAGE_SETTINGS[asset] if name not in skip}


def code_versions(settings: dict | None = None) -> dict[str, str]:
    """Asset name -> code version: the hash of its modules' sources and, given ``settings`` (a dict of setting
    values, ``quotas`` and ``model`` included), of the settings its stage depends on."""
    versions = {}
    for asset, module in ASSET_MODULES.items():
        payload = {"code": _source_hash(module_closure(f"{PACKAGE}.{module}"))}
        if settings is not None:
            payload["settings"] = stage_settings(asset, settings)
        versions[asset] = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return versions


def modules_of(asset: str) -> tuple[str, ...]:
    """The modules whose source makes up ``asset``'s code version (shown in the dataset card and the README)."""
    return module_closure(f"{PACKAGE}.{ASSET_MODULES[asset]}")
