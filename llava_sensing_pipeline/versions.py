"""Code versions: each asset's version is a hash of the source of the modules that hold its logic, so editing
the logic marks exactly the affected assets stale (Dagster shows it, and the CLI re-materializes them)."""

from __future__ import annotations

import hashlib
import json
import inspect
from types import ModuleType

from . import curation, dataset_card, environment, export, generation, seeding, sensors, style, text


def module_version(*modules: ModuleType) -> str:
    h = hashlib.sha256()
    for module in modules:
        h.update(inspect.getsource(module).encode())
    return h.hexdigest()[:12]


CODE_VERSIONS = {
    "novel_files": module_version(text),
    "text_chunks": module_version(text),
    "environment_features": module_version(environment),
    "sensor_records": module_version(sensors, seeding),
    "style_labels": module_version(style),
    "generated_examples": module_version(generation, seeding),
    "chunked_json_exports": module_version(export, curation, dataset_card),
}


def partition_fingerprint(file_sha256: str, settings_fields: dict, extra: dict | None = None) -> str:
    """What a partition's examples depend on: the file's bytes, the per-file code and the per-file settings.

    ``generated_examples`` records it as metadata; the CLI re-materializes a partition when it differs.
    """
    per_file_code = {k: v for k, v in CODE_VERSIONS.items() if k != "chunked_json_exports"}
    payload = {"sha256": file_sha256, "code": per_file_code, "settings": settings_fields, "extra": extra or {}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
