"""What some tests need from outside the repository, and what happens when it is missing.

A test that needs the shared corpus (``../shared/corpus``), chromium, PostgreSQL or an optional package calls
:func:`require` with the condition and what is missing: on a developer's machine the test is skipped with that
reason; in CI (the ``CI`` variable set to anything but ``""``, ``0``, ``false`` or ``no``) it fails instead, so
nothing is ever skipped silently there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORPUS_ENV = "LLAVA_SENSING_TEST_CORPUS"
"""Overrides where the shared corpus is looked for (default: ``../shared/corpus`` beside the checkout)."""


def in_ci() -> bool:
    """Whether the tests run in CI: ``CI`` is set to a true value (``true``, ``1``, ``yes``, ...)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(condition: object, reason: str) -> None:
    """Nothing when ``condition`` holds; otherwise skip the test with ``reason``, or fail it in CI."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"{reason} (CI is set, so this test must run: provide what it needs)", pytrace=False)
    pytest.skip(reason)


def corpus_dir() -> Path:
    """The shared sample corpus: ``$LLAVA_SENSING_TEST_CORPUS`` or ``../shared/corpus`` beside the checkout."""
    return Path(os.environ.get(CORPUS_ENV) or REPO.parent / "shared" / "corpus")


def require_corpus() -> Path:
    """The shared corpus folder, which must hold its ``MANIFEST.tsv`` and genre folders of novels (see
    :func:`require`)."""
    corpus = corpus_dir()
    require((corpus / "MANIFEST.tsv").is_file() and any(corpus.glob("*/*.txt")),
            f"the shared corpus is missing at {corpus}: put it at ../shared/corpus beside the checkout or set "
            f"{CORPUS_ENV}")
    return corpus
