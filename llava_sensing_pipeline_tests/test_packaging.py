"""What the installed package ships: the product only, no test servers, fixtures or test-model fetchers."""

import ast
import runpy
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parents[1]


def shipped_packages() -> list[str]:
    """The ``packages`` that ``setup.py`` passes to ``setup()`` (it is run with ``setup`` mocked)."""
    with mock.patch("setuptools.setup") as setup:
        runpy.run_path(str(REPO / "setup.py"), run_name="__main__")
    return list(setup.call_args.kwargs["packages"])


def test_the_installed_package_ships_no_test_tooling():
    packages = shipped_packages()
    assert "llava_sensing_pipeline" in packages
    assert not [p for p in packages if "test" in p or "devtools" in p], packages
    for package in packages:
        for module in (REPO / package.replace(".", "/")).glob("*.py"):
            assert "test" not in module.stem, f"{module.relative_to(REPO)} is shipped with the package"


def test_the_product_imports_nothing_from_the_tests():
    for path in (REPO / "llava_sensing_pipeline").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert "tests" not in name and "devtools" not in name and "test_server" not in name, \
                    f"{path.relative_to(REPO)} imports {name}"
