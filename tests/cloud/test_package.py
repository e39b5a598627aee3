"""The deployment zip imports on a bare Python with only what Lambda's runtime adds (boto3)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import grimp
import pytest

from watchdog.cloud import package

#: What Lambda's Python runtime brings besides the standard library: boto3 and its needs.
LAMBDA_RUNTIME = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six.py", "urllib3")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> package.Package:
    return package.build(tmp_path_factory.mktemp("zip") / "idle-watchdog.zip")


def _runtime(into: Path) -> Path:
    """A directory standing in for Lambda's runtime: links to boto3 and what it imports."""
    import boto3

    site = Path(boto3.__file__).resolve().parent.parent
    into.mkdir()
    for name in LAMBDA_RUNTIME:
        (into / name).symlink_to(site / name)
    return into


def test_the_cloud_modules_import_from_the_zip_with_only_stdlib_and_boto3(
    built: package.Package, tmp_path: Path
) -> None:
    """Whatever handler modules exist import from the unzipped package, not this checkout."""
    code = tmp_path / "task"
    with zipfile.ZipFile(built.path) as archive:
        archive.extractall(code)
    modules = sorted(f"watchdog.cloud.{p.stem}" for p in (code / "watchdog" / "cloud").glob("*.py"))
    assert "watchdog.cloud.notify" in modules
    runtime = _runtime(tmp_path / "runtime")
    script = (
        "import importlib, sys\n"
        f"sys.path[:0] = [{str(code)!r}, {str(runtime)!r}]\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "import watchdog, requests, structlog\n"
        f"assert watchdog.__file__.startswith({str(code)!r}), watchdog.__file__\n"
        f"assert requests.__file__.startswith({str(code)!r}), requests.__file__\n"
        "print(watchdog.__version__)\n"
    )
    # -I: no user site, no PYTHON* variables; -S: no site-packages (so no editable install).
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() not in ("", "0+unknown")


def test_the_shells_the_cloud_never_imports_are_left_out(built: package.Package) -> None:
    """The import graph has no chain from watchdog.cloud to them, so leaving them out is safe."""
    graph = grimp.build_graph("watchdog")
    modules = [m.removesuffix(".py") for m in package.EXCLUDED]
    chains = {
        m: graph.find_shortest_chain(
            importer="watchdog.cloud", imported=f"watchdog.{m}", as_packages=True
        )
        for m in modules
    }
    assert {m: c for m, c in chains.items() if c is not None} == {}
    names = zipfile.ZipFile(built.path).namelist()
    assert not [n for n in names if n.split("/")[:2] in (["watchdog", m] for m in package.EXCLUDED)]
    assert "watchdog/deploy/scheduler-policy.json" in names


def test_the_zip_is_pure_python_0644_and_the_same_bytes_each_build(
    built: package.Package, tmp_path: Path
) -> None:
    """No extension built for this machine; Lambda runs the code as another user."""
    with zipfile.ZipFile(built.path) as archive:
        infos = archive.infolist()
    assert [i.filename for i in infos if i.filename.endswith((".so", ".pyc"))] == []
    assert {(i.external_attr >> 16) & 0o777 for i in infos} == {0o644}
    assert not any(n.startswith(("boto3/", "botocore/")) for n in (i.filename for i in infos))
    again = package.build(tmp_path / "again.zip")
    assert again.sha256 == built.sha256
