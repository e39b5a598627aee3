"""The Lambda deployment zip: the ``watchdog`` package and what Lambda's Python lacks.

- **watchdog**, without the shells the cloud never imports (``desktop``,
  ``agent``, ``launch``, ``sim``, the CLI): the import graph proves it
  (``tests/cloud/test_package.py`` asks grimp, import-linter's engine, for
  any chain from ``watchdog.cloud`` to them).
- **structlog and requests** (with urllib3, idna, charset-normalizer and
  certifi), copied from the installed distributions: pure Python only.
  Compiled extensions are left out: they were built for this machine, not
  for Lambda's; charset-normalizer falls back to its pure-Python modules.
- **not boto3**: Lambda's Python runtime ships boto3 and botocore, and the
  handlers use only long-standing APIs (EC2, SQS, DynamoDB, SNS, SSM, STS,
  Organizations). Leaving it out keeps the zip small and fast to deploy.

Entries are sorted, dated 1980-01-01 and mode 0644 (Lambda runs the code as
another user), so the same sources give the same bytes and the same SHA-256,
and ``cloud deploy`` uploads only what changed.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath

import watchdog

#: Parts of ``watchdog`` the cloud never imports (see the module docstring).
EXCLUDED = ("desktop", "agent", "launch", "sim", "cli.py", "__main__.py")
#: Distributions Lambda's Python 3.12 lacks and the cloud imports (requests' own needs too).
VENDORED = ("structlog", "requests", "urllib3", "idna", "charset-normalizer", "certifi")
_SKIPPED_SUFFIXES = (".pyc", ".pyo", ".so", ".pyd", ".dylib")
_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Package:
    path: Path
    sha256: str
    files: int
    size: int


def _wanted(relative: PurePosixPath) -> bool:
    return "__pycache__" not in relative.parts and not relative.name.endswith(_SKIPPED_SUFFIXES)


def _own_files() -> Iterator[tuple[str, Path]]:
    root = Path(watchdog.__file__).parent
    for path in sorted(root.rglob("*")):
        relative = PurePosixPath(path.relative_to(root).as_posix())
        if path.is_file() and relative.parts[0] not in EXCLUDED and _wanted(relative):
            yield f"watchdog/{relative}", path


def _metadata_file() -> tuple[str, bytes]:
    """A minimal dist-info, so ``watchdog.__version__`` is known in the function's logs."""
    version = watchdog.__version__
    text = f"Metadata-Version: 2.1\nName: idle-watchdog\nVersion: {version}\n"
    return f"idle_watchdog-{version}.dist-info/METADATA", text.encode()


def _vendored_files() -> Iterator[tuple[str, Path]]:
    for name in VENDORED:
        dist = metadata.distribution(name)
        for file in dist.files or ():
            relative = PurePosixPath(str(file))
            if ".." in relative.parts or not _wanted(relative):
                continue  # console scripts live outside site-packages
            yield str(relative), Path(str(dist.locate_file(file)))


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.external_attr = 0o100644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def build(out: Path) -> Package:
    """Write the zip to ``out``; its SHA-256 names the upload."""
    entries: dict[str, bytes] = {}
    for name, path in (*_own_files(), *_vendored_files()):
        entries[name] = path.read_bytes()
    meta_name, meta = _metadata_file()
    entries[meta_name] = meta
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w") as archive:
        for name in sorted(entries):
            archive.writestr(_entry(name), entries[name], compresslevel=9)
    data = out.read_bytes()
    return Package(out, hashlib.sha256(data).hexdigest(), len(entries), len(data))
