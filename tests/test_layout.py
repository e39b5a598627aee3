"""The folders are the architecture: checks that keep the layout honest.

import-linter (``lint-imports`` in CI) holds the direction of imports; these
hold what it cannot: module size, and tests that mirror the package.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "watchdog"
LIMIT = 600  # lines: a module bigger than this holds more than one idea
PACKAGES = ("core", "aws", "agent", "scheduler", "desktop", "cloud", "launch", "sim")


def _modules(top: Path) -> list[Path]:
    return sorted(p for p in top.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", _modules(PACKAGE), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_over_the_limit(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    where = path.relative_to(ROOT)
    assert lines <= LIMIT, f"{where} has {lines} lines; split it by what changes together"


def test_every_package_has_its_tests_beside_the_same_name() -> None:
    for name in PACKAGES:
        assert (PACKAGE / name / "__init__.py").is_file(), f"watchdog/{name}/ is missing"
        assert (ROOT / "tests" / name).is_dir(), f"tests/{name}/ should mirror watchdog/{name}/"


def test_no_test_package_lacks_its_module_package() -> None:
    mirrored = {p.name for p in (ROOT / "tests").iterdir() if (p / "__init__.py").is_file()}
    stray = mirrored - set(PACKAGES)
    assert not stray, f"tests/ folders with no watchdog/ package: {stray}"


def test_top_level_modules_are_only_the_shared_ones() -> None:
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top == {"__init__", "__main__", "cli", "config", "log", "paths", "sdnotify"}
