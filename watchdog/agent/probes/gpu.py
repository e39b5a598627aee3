"""GPU probe: SM utilisation, memory held and compute processes per GPU.

NVML (``nvidia-ml-py``, imported as ``pynvml``) is the primary source: it is
cheap (well under a millisecond per read), backwards compatible, and keeps a
ring buffer of utilisation samples, so a burst that starts and ends between two
reads is still seen. ``nvidia-smi`` CSV is the fallback for hosts where the
Python bindings cannot load the library but the tool works; it only sees the
utilisation of the last sample period, so it can miss short bursts.

Outcomes, as the reducer needs them:

- no NVIDIA library or driver, or no ``nvidia-smi``: ``()`` ("no GPUs"), said
  once in the log, never again per read;
- a field the device does not support: that field ``None`` (``util=None`` means
  "unknown for that GPU", never idle);
- anything else (a GPU that fell off the bus, a driver/library mismatch, a
  non-zero exit): ``ProbeError``, so the whole GPU signal is unknown.
"""

from __future__ import annotations

import contextlib
import csv
import shutil
import subprocess
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

import pynvml  # type: ignore[import-untyped]
import structlog

from watchdog.core.sample import Gpu, ProbeError

__all__ = [
    "GpuProbe",
    "NoGpuProbe",
    "NvmlProbe",
    "Runner",
    "SmiProbe",
    "auto_probe",
    "run_command",
]

log = structlog.get_logger("watchdog.agent.gpu")

T = TypeVar("T")

MIB = 1024 * 1024


class GpuProbe(Protocol):
    def read(self) -> tuple[Gpu, ...]:
        """One entry per GPU (``()`` when there are none); ``ProbeError`` when it cannot tell."""
        ...


class NoGpuProbe:
    """For machines with neither NVML nor ``nvidia-smi``: always ``()``, said once."""

    def __init__(self, reason: str = "neither NVML nor nvidia-smi is available") -> None:
        self.reason = reason
        self._said = False

    def read(self) -> tuple[Gpu, ...]:
        if not self._said:
            log.info("no GPUs", reason=self.reason)
            self._said = True
        return ()


# --- NVML ------------------------------------------------------------------------------------
# The typed adapter: the only code that calls pynvml, whose untyped (Any) results are converted
# to plain ints and floats here.
# Functions look pynvml attributes up at call time so tests can monkeypatch the module.

# What nvmlDeviceGetSamples says its values are, mapped to the c_nvmlValue_t member to read.
_VALUE_FIELD = {
    pynvml.NVML_VALUE_TYPE_DOUBLE: "dVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
    pynvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal",
    pynvml.NVML_VALUE_TYPE_SIGNED_INT: "siVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_SHORT: "usVal",
}

# Init failures that mean "this machine has no usable NVIDIA GPU", not "something broke".
_ABSENT: tuple[type[Exception], ...] = (
    pynvml.NVMLError_LibraryNotFound,
    pynvml.NVMLError_DriverNotLoaded,
)
# A field this device or driver cannot report. FunctionNotFound / LibraryMismatch: an older
# driver lacks the versioned entry point the bindings call; that field is as unknowable.
_UNSUPPORTED: tuple[type[Exception], ...] = (
    pynvml.NVMLError_NotSupported,
    pynvml.NVMLError_FunctionNotFound,
    pynvml.NVMLLibraryMismatchError,
)


def _nv_init() -> None:
    pynvml.nvmlInit()


def _nv_shutdown() -> None:
    pynvml.nvmlShutdown()


def _nv_handles() -> tuple[object, ...]:
    return tuple(pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount()))


def _nv_samples(handle: object, since_us: int) -> list[tuple[int, float]]:
    """(timestamp µs, SM %) of the buffered utilisation samples newer than ``since_us``."""
    value_type, samples = pynvml.nvmlDeviceGetSamples(
        handle, pynvml.NVML_GPU_UTILIZATION_SAMPLES, since_us
    )
    field = _VALUE_FIELD.get(value_type, "uiVal")
    return [(int(s.timeStamp), float(getattr(s.sampleValue, field))) for s in samples]


def _nv_utilization(handle: object) -> float:
    return float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)


def _nv_memory_used(handle: object) -> int:
    return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)


def _nv_compute_pids(handle: object) -> list[int]:
    return [int(p.pid) for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)]


def _unsupported_as_none(read: Callable[[object], T], handle: object) -> T | None:
    try:
        return read(handle)
    except _UNSUPPORTED:
        return None


class NvmlProbe:
    """GPUs through NVML. Initialises lazily on the first read, then keeps the handles.

    A failed init is retried on the next read (silently), so a driver that loads after the
    agent started (cloud-init installing it, a DKMS build at boot) is picked up.
    """

    def __init__(self) -> None:
        self._handles: tuple[object, ...] | None = None
        self._absent: Exception | None = None  # why NVML is unusable here, after a failed init
        self._said_absent = False
        # Per GPU index: timestamp (µs, NVML's clock) of the newest utilisation sample seen.
        self._last_seen: dict[int, int] = {}

    def open(self) -> bool:
        """Initialise NVML once; False when this machine has no NVML (library or driver).

        Raises ``ProbeError`` for any other failure (e.g. a driver/library version
        mismatch after an upgrade without reboot): the GPUs exist but cannot be read.
        """
        if self._handles is not None:
            return True
        try:
            _nv_init()
        except _ABSENT as e:
            self._absent = e
            return False
        except pynvml.NVMLError as e:
            raise ProbeError(f"nvmlInit failed: {e}") from e
        try:
            handles = _nv_handles()
        except pynvml.NVMLError as e:
            with contextlib.suppress(pynvml.NVMLError):  # balance the init: retry starts clean
                _nv_shutdown()
            raise ProbeError(_describe("enumerating GPUs", e)) from e
        self._handles = handles
        self._absent = None
        log.info("nvml ready", gpus=len(handles))
        return True

    def close(self) -> None:
        """Release NVML (agent shutdown); a later read initialises it again."""
        if self._handles is not None:
            self._handles = None
            self._last_seen.clear()
            try:
                _nv_shutdown()
            except pynvml.NVMLError as e:
                log.warning("nvmlShutdown failed", error=str(e))

    @property
    def library_missing(self) -> bool:
        """The last init could not even load the NVML library (no NVIDIA software here)."""
        return isinstance(self._absent, pynvml.NVMLError_LibraryNotFound)

    def read(self) -> tuple[Gpu, ...]:
        if not self.open():
            if not self._said_absent:
                log.info("no GPUs", source="nvml", reason=_describe("nvmlInit", self._absent))
                self._said_absent = True
            return ()
        assert self._handles is not None
        gpus: list[Gpu] = []
        for index, handle in enumerate(self._handles):
            try:
                gpus.append(self._read_one(index, handle))
            except pynvml.NVMLError as e:
                raise ProbeError(_describe(f"GPU {index}", e)) from e
        return tuple(gpus)

    def _read_one(self, index: int, handle: object) -> Gpu:
        util = self._util(index, handle)
        used = _unsupported_as_none(_nv_memory_used, handle)
        # Gpu.procs has no "unknown"; an unsupported process list reports none and leaves
        # utilisation as the signal (on such devices it is usually unsupported too -> None).
        pids = _unsupported_as_none(_nv_compute_pids, handle) or []
        return Gpu(
            index=index,
            util=util,
            mem_used_mib=None if used is None else used / MIB,
            procs=len(pids),
            pids=tuple(pids),
        )

    def _util(self, index: int, handle: object) -> float | None:
        """Highest SM % since the previous read, from NVML's sample buffer.

        NotFound (nothing new since ``since``, normal on an idle GPU), NotSupported, or an
        empty buffer fall back to the current utilisation rate. The remembered timestamp is
        only advanced from samples: it lives in NVML's clock, not ours. The first read takes
        the whole buffer; reads further apart than the buffer spans lose the oldest samples.
        """
        since = self._last_seen.get(index, 0)
        try:
            samples = _nv_samples(handle, since)
        except (pynvml.NVMLError_NotFound, *_UNSUPPORTED):
            samples = []
        fresh = [(ts, value) for ts, value in samples if ts > since]
        if fresh:
            self._last_seen[index] = max(ts for ts, _ in fresh)
            return max(value for _, value in fresh)
        return _unsupported_as_none(_nv_utilization, handle)


def _describe(what: str, e: Exception | None) -> str:
    if isinstance(e, pynvml.NVMLError_GpuIsLost):
        return f"{what}: GPU has fallen off the bus ({e}); it needs a reset or a reboot"
    return f"{what}: {type(e).__name__}: {e}"


# --- nvidia-smi -------------------------------------------------------------------------------

Runner = Callable[[Sequence[str]], str]
"""Runs argv, returns stdout; raises CalledProcessError on a non-zero exit and
FileNotFoundError when the program is missing (``subprocess.run`` semantics)."""

# Processes are joined to GPUs by UUID: --query-compute-apps has no index field, and the
# UUID is the same string in both queries, whereas PCI bus ids have been printed with
# 4- and 8-digit domains by different drivers. gpustat joins the same way.
QUERY_GPU = (
    "nvidia-smi",
    "--query-gpu=index,uuid,utilization.gpu,memory.used",
    "--format=csv,noheader,nounits",
)
QUERY_APPS = (
    "nvidia-smi",
    "--query-compute-apps=gpu_uuid,pid",
    "--format=csv,noheader,nounits",
)
SMI_TIMEOUT_S = 30.0  # a wedged driver can make nvidia-smi hang; multi-GPU hosts take seconds
_NONE_VALUES = frozenset({"[N/A]", "[Not Supported]", "N/A"})


def run_command(argv: Sequence[str]) -> str:
    """The real runner: stdout of ``argv``; raises on a non-zero exit, a timeout, or no binary."""
    done = subprocess.run(
        list(argv), capture_output=True, text=True, check=True, timeout=SMI_TIMEOUT_S
    )
    return done.stdout


class SmiProbe:
    """GPUs through ``nvidia-smi`` CSV, parsed by column position (headers vary by version)."""

    def __init__(self, run: Runner = run_command) -> None:
        self._run = run
        self._said_absent = False

    def read(self) -> tuple[Gpu, ...]:
        gpu_csv = self._query(QUERY_GPU)
        if gpu_csv is None:
            return ()
        apps_csv = self._query(QUERY_APPS)
        if apps_csv is None:  # the binary vanished between the two calls
            return ()
        return parse_smi(gpu_csv, apps_csv)

    def _query(self, argv: Sequence[str]) -> str | None:
        try:
            return self._run(argv)
        except FileNotFoundError:
            if not self._said_absent:
                log.info("no GPUs", source="nvidia-smi", reason="nvidia-smi not found")
                self._said_absent = True
            return None
        except subprocess.CalledProcessError as e:
            message = " ".join(f"{e.stdout or ''} {e.stderr or ''}".split())
            raise ProbeError(f"nvidia-smi exited {e.returncode}: {message}") from e
        except subprocess.TimeoutExpired as e:
            raise ProbeError(f"nvidia-smi timed out after {e.timeout:g} s") from e
        except OSError as e:
            raise ProbeError(f"nvidia-smi could not run: {e}") from e


def parse_smi(gpu_csv: str, apps_csv: str) -> tuple[Gpu, ...]:
    """Join the two CSV outputs of ``QUERY_GPU`` and ``QUERY_APPS`` into ``Gpu`` entries."""
    gpus: list[tuple[int, str, float | None, float | None]] = []
    for row in _rows(gpu_csv, 4, "--query-gpu"):
        index, uuid, util, mem = row
        try:
            gpus.append((int(index), uuid, _number(util), _number(mem)))
        except ValueError as e:
            raise ProbeError(f"nvidia-smi --query-gpu: unexpected row {row!r}") from e
    pids: dict[str, list[int]] = {uuid: [] for _, uuid, _, _ in gpus}
    procs: dict[str, int] = dict.fromkeys(pids, 0)
    for row in _rows(apps_csv, 2, "--query-compute-apps"):
        uuid, pid = row
        if uuid not in pids:
            raise ProbeError(f"nvidia-smi: compute process {pid} on unknown GPU {uuid}")
        procs[uuid] += 1
        try:
            pid_n = _number(pid)
        except ValueError as e:
            raise ProbeError(f"nvidia-smi --query-compute-apps: unexpected row {row!r}") from e
        if pid_n is not None:  # a pid it cannot resolve still counts as a process
            pids[uuid].append(int(pid_n))
    return tuple(
        Gpu(index=i, util=u, mem_used_mib=m, procs=procs[uuid], pids=tuple(pids[uuid]))
        for i, uuid, u, m in gpus
    )


def _rows(text: str, width: int, query: str) -> list[list[str]]:
    rows = [r for r in csv.reader(text.splitlines(), skipinitialspace=True) if r]
    for row in rows:
        if len(row) != width:
            raise ProbeError(f"nvidia-smi {query}: expected {width} columns, got {row!r}")
    return [[cell.strip() for cell in row] for row in rows]


def _number(cell: str) -> float | None:
    """A numeric cell; ``[N/A]``/``[Not Supported]`` -> None. Other ``[...]`` text is an error
    nvidia-smi hit for that field (``[Unknown Error]``, ``[GPU is lost]``): ValueError."""
    if cell in _NONE_VALUES:
        return None
    return float(cell)


# --- choice -----------------------------------------------------------------------------------


def auto_probe(
    *,
    which: Callable[[str], str | None] = shutil.which,
    run: Runner = run_command,
) -> GpuProbe:
    """NVML if its library loads, else ``nvidia-smi`` if on PATH, else a probe that says ().

    A library that loads but whose driver is missing or broken still picks NVML: the
    NVML probe then reports "no GPUs" (driver not loaded) or unknown (anything else),
    and picks the GPUs up if the driver appears later.
    """
    nvml = NvmlProbe()
    try:
        nvml.open()
    except ProbeError:
        return nvml  # the library loaded; the GPUs are there but unreadable right now
    if not nvml.library_missing:
        return nvml
    if which("nvidia-smi") is not None:
        log.info("gpu probe", source="nvidia-smi", reason="NVML library not found")
        return SmiProbe(run)
    return NoGpuProbe("no NVML library and no nvidia-smi on PATH")
