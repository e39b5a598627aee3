"""The GPU probe: NVML through a fake of the pynvml surface, nvidia-smi through replayed CSV.

The fake replaces pynvml's functions (not the probe's adapter), returns the same ctypes
structures the real bindings return, and raises pynvml's own exception classes, so the
adapter's decoding is exercised too. One test runs the real NVML and skips without a driver.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pynvml  # type: ignore[import-untyped]
import pytest
from structlog.testing import capture_logs

from watchdog.agent.probes.gpu import (
    QUERY_APPS,
    QUERY_GPU,
    NoGpuProbe,
    NvmlProbe,
    SmiProbe,
    auto_probe,
    run_command,
)
from watchdog.core.sample import Gpu, ProbeError

FIXTURES = Path(__file__).parent / "fixtures" / "nvidia-smi"
MIB = 1024 * 1024


# --- a fake of the pynvml functions the probe uses ----------------------------------------------


@dataclass
class FakeDevice:
    util: int = 0  # what nvmlDeviceGetUtilizationRates says now
    buffer: list[tuple[int, int]] = field(default_factory=list)  # (µs timestamp, SM %) samples
    used_bytes: int = 0
    pids: list[int] = field(default_factory=list)
    fail: dict[str, Exception] = field(default_factory=dict)  # pynvml function name -> error
    since_seen: list[int] = field(default_factory=list)  # lastSeenTimeStamp of each call

    def check(self, name: str) -> None:
        if name in self.fail:
            raise self.fail[name]


class FakeNvml:
    """Just enough NVML: init, enumeration, samples, utilisation, memory, processes."""

    def __init__(self, *devices: FakeDevice) -> None:
        self.devices = list(devices)
        self.init_error: Exception | None = None
        self.inits = 0
        self.shutdowns = 0
        self.handle_lookups = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
        for name, fn in {
            "nvmlInit": self.init,
            "nvmlShutdown": self.shutdown,
            "nvmlDeviceGetCount": lambda: len(self.devices),
            "nvmlDeviceGetHandleByIndex": self.handle,
            "nvmlDeviceGetSamples": self.samples,
            "nvmlDeviceGetUtilizationRates": self.utilization,
            "nvmlDeviceGetMemoryInfo": self.memory,
            "nvmlDeviceGetComputeRunningProcesses": self.processes,
        }.items():
            monkeypatch.setattr(pynvml, name, fn)
        return self

    def init(self) -> None:
        self.inits += 1
        if self.init_error is not None:
            raise self.init_error

    def shutdown(self) -> None:
        self.shutdowns += 1

    def handle(self, index: int) -> FakeDevice:
        self.handle_lookups += 1
        device = self.devices[index]
        device.check("nvmlDeviceGetHandleByIndex")
        return device

    @staticmethod
    def samples(
        device: FakeDevice, sampling_type: int, since: int
    ) -> tuple[int, list[pynvml.c_nvmlSample_t]]:
        assert sampling_type == pynvml.NVML_GPU_UTILIZATION_SAMPLES
        device.since_seen.append(since)
        device.check("nvmlDeviceGetSamples")
        newer = [(ts, value) for ts, value in device.buffer if ts > since]
        if not newer:  # what NVML does when nothing is newer than lastSeenTimeStamp
            raise pynvml.NVMLError_NotFound()
        out = []
        for ts, value in newer:
            sample = pynvml.c_nvmlSample_t()
            sample.timeStamp = ts
            sample.sampleValue.uiVal = value
            out.append(sample)
        return pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, out

    @staticmethod
    def utilization(device: FakeDevice) -> pynvml.c_nvmlUtilization_t:
        device.check("nvmlDeviceGetUtilizationRates")
        return pynvml.c_nvmlUtilization_t(gpu=device.util, memory=0)

    @staticmethod
    def memory(device: FakeDevice) -> pynvml.c_nvmlMemory_t:
        device.check("nvmlDeviceGetMemoryInfo")
        total = 16 * 1024 * MIB
        return pynvml.c_nvmlMemory_t(
            total=total, free=total - device.used_bytes, used=device.used_bytes
        )

    @staticmethod
    def processes(device: FakeDevice) -> list[pynvml.nvmlFriendlyObject]:
        device.check("nvmlDeviceGetComputeRunningProcesses")
        return [
            pynvml.nvmlFriendlyObject({"pid": p, "usedGpuMemory": 512 * MIB}) for p in device.pids
        ]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    """One idle GPU; tests add devices, samples and failures."""
    return FakeNvml(FakeDevice()).install(monkeypatch)


@pytest.fixture
def logs() -> Iterator[Sequence[Mapping[str, object]]]:
    with capture_logs() as captured:
        yield captured


# --- NVML: no GPU here ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error", [pynvml.NVMLError_LibraryNotFound, pynvml.NVMLError_DriverNotLoaded]
)
def test_no_nvml_is_no_gpus_said_once(
    fake: FakeNvml, logs: Sequence[Mapping[str, object]], error: type[Exception]
) -> None:
    fake.init_error = error()
    probe = NvmlProbe()
    assert [probe.read() for _ in range(4)] == [(), (), (), ()]
    assert len(logs) == 1
    assert logs[0]["event"] == "no GPUs"
    assert error.__name__ in str(logs[0]["reason"])


def test_a_driver_that_loads_later_is_picked_up(
    fake: FakeNvml, logs: Sequence[Mapping[str, object]]
) -> None:
    fake.init_error = pynvml.NVMLError_DriverNotLoaded()
    probe = NvmlProbe()
    assert probe.read() == ()
    fake.init_error = None
    assert probe.read() == (Gpu(index=0, util=0.0, mem_used_mib=0.0),)
    assert [e["event"] for e in logs] == ["no GPUs", "nvml ready"]


def test_the_real_library_is_missing_here_and_reads_as_no_gpus() -> None:
    """No monkeypatching: on a machine without the NVIDIA driver, the real bindings."""
    try:
        pynvml.nvmlInit()
    except (pynvml.NVMLError_LibraryNotFound, pynvml.NVMLError_DriverNotLoaded):
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("NVML is present on this machine")
    with capture_logs() as logs:
        probe = NvmlProbe()
        assert probe.read() == ()
        assert probe.read() == ()
    assert len(logs) == 1


# --- NVML: reading ---------------------------------------------------------------------------


def test_init_is_lazy_and_happens_once(fake: FakeNvml) -> None:
    fake.devices.append(FakeDevice())
    probe = NvmlProbe()
    assert fake.inits == 0
    for _ in range(3):
        assert len(probe.read()) == 2
    assert fake.inits == 1
    assert fake.handle_lookups == 2  # handles are cached, not looked up per read


def test_fields_are_read_and_converted(fake: FakeNvml) -> None:
    fake.devices[0] = FakeDevice(
        buffer=[(1_000, 40), (2_000, 55)], used_bytes=7234 * MIB, pids=[4127, 4130]
    )
    fake.devices.append(FakeDevice(util=0, used_bytes=21538 * MIB + MIB // 2, pids=[2291]))
    assert NvmlProbe().read() == (
        Gpu(index=0, util=55.0, mem_used_mib=7234.0, procs=2, pids=(4127, 4130)),
        Gpu(index=1, util=0.0, mem_used_mib=21538.5, procs=1, pids=(2291,)),
    )


def test_a_burst_between_reads_is_reported_as_the_max(fake: FakeNvml) -> None:
    device = fake.devices[0]
    device.buffer = [(1_000_000, 0), (1_166_000, 0)]
    probe = NvmlProbe()
    assert probe.read()[0].util == 0.0

    # A 0.3 s kernel between two reads; by the time of the next read the GPU is idle again.
    device.buffer += [(1_333_000, 0), (1_500_000, 91), (1_666_000, 64), (1_833_000, 0)]
    device.util = 0
    assert probe.read()[0].util == 91.0
    assert device.since_seen == [0, 1_166_000]  # only samples after the previous read

    # Nothing new (NVML raises NotFound): the current rate, and the timestamp stays put.
    device.util = 3
    assert probe.read()[0].util == 3.0
    device.buffer.append((2_000_000, 12))
    assert probe.read()[0].util == 12.0
    assert device.since_seen == [0, 1_166_000, 1_833_000, 1_833_000]


def test_sample_timestamps_are_tracked_per_gpu(fake: FakeNvml) -> None:
    fake.devices = [FakeDevice(buffer=[(500, 80)]), FakeDevice(buffer=[(9_000, 0)])]
    probe = NvmlProbe()
    probe.read()
    fake.devices[0].buffer.append((600, 0))
    fake.devices[1].buffer.append((9_100, 30))
    assert [g.util for g in probe.read()] == [0.0, 30.0]
    assert fake.devices[0].since_seen == [0, 500]
    assert fake.devices[1].since_seen == [0, 9_000]


def test_samples_not_supported_fall_back_to_the_current_rate(fake: FakeNvml) -> None:
    fake.devices[0] = FakeDevice(
        util=37, fail={"nvmlDeviceGetSamples": pynvml.NVMLError_NotSupported()}
    )
    assert NvmlProbe().read()[0].util == 37.0


def test_utilisation_not_supported_is_unknown_not_idle(fake: FakeNvml) -> None:
    fake.devices[0] = FakeDevice(
        used_bytes=4312 * MIB,
        pids=[77],
        fail={
            "nvmlDeviceGetSamples": pynvml.NVMLError_NotSupported(),
            "nvmlDeviceGetUtilizationRates": pynvml.NVMLError_NotSupported(),
        },
    )
    assert NvmlProbe().read() == (
        Gpu(index=0, util=None, mem_used_mib=4312.0, procs=1, pids=(77,)),
    )


def test_memory_and_processes_not_supported(fake: FakeNvml) -> None:
    fake.devices[0] = FakeDevice(
        util=5,
        fail={
            "nvmlDeviceGetMemoryInfo": pynvml.NVMLError_NotSupported(),
            # an older driver without the _v3 entry point the bindings call
            "nvmlDeviceGetComputeRunningProcesses": pynvml.NVMLLibraryMismatchError("old"),
        },
    )
    assert NvmlProbe().read() == (Gpu(index=0, util=5.0, mem_used_mib=None, procs=0, pids=()),)


@pytest.mark.parametrize(
    "function",
    [
        "nvmlDeviceGetSamples",
        "nvmlDeviceGetUtilizationRates",
        "nvmlDeviceGetMemoryInfo",
        "nvmlDeviceGetComputeRunningProcesses",
    ],
)
def test_an_unexpected_nvml_error_mid_read_is_a_probe_error(fake: FakeNvml, function: str) -> None:
    fake.devices.append(FakeDevice())
    probe = NvmlProbe()
    assert len(probe.read()) == 2
    fake.devices[1].fail[function] = pynvml.NVMLError_Unknown()
    if function == "nvmlDeviceGetUtilizationRates":  # only reached when no samples are new
        fake.devices[1].fail["nvmlDeviceGetSamples"] = pynvml.NVMLError_NotFound()
    with pytest.raises(ProbeError, match=r"GPU 1: NVMLError_Unknown"):
        probe.read()


def test_a_gpu_fallen_off_the_bus_is_a_probe_error(fake: FakeNvml) -> None:
    probe = NvmlProbe()
    probe.read()
    fake.devices[0].fail["nvmlDeviceGetSamples"] = pynvml.NVMLError_GpuIsLost()
    with pytest.raises(ProbeError, match="fallen off the bus"):
        probe.read()


def test_a_gpu_lost_before_enumeration_is_a_probe_error(fake: FakeNvml) -> None:
    fake.devices[0].fail["nvmlDeviceGetHandleByIndex"] = pynvml.NVMLError_GpuIsLost()
    with pytest.raises(ProbeError, match="fallen off the bus"):
        NvmlProbe().read()
    assert fake.shutdowns == 1  # the init is balanced so the next read starts clean


def test_other_init_errors_are_unknown_and_retried(
    fake: FakeNvml, logs: Sequence[Mapping[str, object]]
) -> None:
    fake.init_error = pynvml.NVMLError_LibRmVersionMismatch()  # driver upgraded, no reboot
    probe = NvmlProbe()
    for _ in range(2):
        with pytest.raises(ProbeError, match="nvmlInit failed"):
            probe.read()
    fake.init_error = None
    assert len(probe.read()) == 1
    assert fake.inits == 3
    assert not [e for e in logs if e["event"] == "no GPUs"]


def test_close_shuts_down_and_a_later_read_reopens(fake: FakeNvml) -> None:
    probe = NvmlProbe()
    probe.read()
    probe.close()
    probe.close()
    assert fake.shutdowns == 1
    assert len(probe.read()) == 1
    assert fake.inits == 2


def test_real_nvml() -> None:
    """The real NVML path, end to end. Runs where a driver is loaded; skips cleanly elsewhere."""
    try:
        pynvml.nvmlInit()
    except (pynvml.NVMLError_LibraryNotFound, pynvml.NVMLError_DriverNotLoaded) as e:
        pytest.skip(f"no NVIDIA driver here: {e}")
    try:
        count = pynvml.nvmlDeviceGetCount()
    finally:
        pynvml.nvmlShutdown()
    probe = NvmlProbe()
    try:
        first, second = probe.read(), probe.read()
    finally:
        probe.close()
    assert [g.index for g in first] == list(range(count))
    for g in (*first, *second):
        assert g.util is None or 0 <= g.util <= 100
        assert g.mem_used_mib is None or g.mem_used_mib >= 0
        assert g.procs == len(g.pids)


# --- nvidia-smi --------------------------------------------------------------------------------


def replay(case: str, calls: list[tuple[str, ...]] | None = None) -> Callable[[Sequence[str]], str]:
    """A runner answering the probe's two queries from ``<case>.gpus.csv``/``<case>.apps.csv``."""
    files: dict[tuple[str, ...], Path] = {
        QUERY_GPU: FIXTURES / f"{case}.gpus.csv",
        QUERY_APPS: FIXTURES / f"{case}.apps.csv",
    }

    def run(argv: Sequence[str]) -> str:
        if calls is not None:
            calls.append(tuple(argv))
        return files[tuple(argv)].read_text()

    return run


def test_smi_t4_busy() -> None:
    calls: list[tuple[str, ...]] = []
    assert SmiProbe(replay("t4-busy", calls)).read() == (
        Gpu(index=0, util=98.0, mem_used_mib=7234.0, procs=1, pids=(4127,)),
    )
    assert calls == [QUERY_GPU, QUERY_APPS]


def test_smi_a10g_idle_with_memory_held() -> None:
    assert SmiProbe(replay("a10g-idle")).read() == (
        Gpu(index=0, util=0.0, mem_used_mib=21538.0, procs=1, pids=(2291,)),
    )


def test_smi_p4d_eight_gpus() -> None:
    gpus = SmiProbe(replay("p4d-8gpu")).read()
    assert [g.index for g in gpus] == list(range(8))
    assert [g.util for g in gpus] == [100.0, 97.0, 99.0, 100.0, 98.0, 100.0, 0.0, 0.0]
    assert gpus[0] == Gpu(index=0, util=100.0, mem_used_mib=38211.0, procs=2, pids=(31005, 30877))
    assert [g.pids for g in gpus[1:6]] == [(31006,), (31007,), (31008,), (31009,), (31010,)]
    assert gpus[6:] == (
        Gpu(index=6, util=0.0, mem_used_mib=0.0),
        Gpu(index=7, util=0.0, mem_used_mib=0.0),
    )


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("a100-mig-na", (Gpu(index=0, util=None, mem_used_mib=4312.0),)),
        (
            "k520-not-supported",
            (
                Gpu(index=0, util=None, mem_used_mib=0.0),
                Gpu(index=1, util=None, mem_used_mib=1201.0),
            ),
        ),
    ],
)
def test_smi_na_and_not_supported_are_unknown(case: str, expected: tuple[Gpu, ...]) -> None:
    assert SmiProbe(replay(case)).read() == expected


def test_smi_driver_failure_is_a_probe_error_with_its_message() -> None:
    text = (FIXTURES / "driver-failed.exit9.txt").read_text()

    def run(argv: Sequence[str]) -> str:
        raise subprocess.CalledProcessError(9, list(argv), output=text, stderr="")

    with pytest.raises(ProbeError, match="exited 9") as raised:
        SmiProbe(run).read()
    assert "couldn't communicate with the NVIDIA driver" in str(raised.value)


def test_smi_missing_is_no_gpus_said_once(logs: Sequence[Mapping[str, object]]) -> None:
    def run(argv: Sequence[str]) -> str:
        raise FileNotFoundError(2, "No such file or directory", argv[0])

    probe = SmiProbe(run)
    assert [probe.read() for _ in range(3)] == [(), (), ()]
    assert len(logs) == 1
    assert logs[0]["event"] == "no GPUs"


def test_smi_timeout_is_a_probe_error() -> None:
    def run(argv: Sequence[str]) -> str:
        raise subprocess.TimeoutExpired(list(argv), 30.0)

    with pytest.raises(ProbeError, match="timed out after 30 s"):
        SmiProbe(run).read()


@pytest.mark.parametrize(
    ("gpus", "apps", "message"),
    [
        ("0, GPU-a, [Unknown Error], 10\n", "", "unexpected row"),
        ("0, GPU-a, 5\n", "", "expected 4 columns"),
        ("0, GPU-a, 5, 10\n", "GPU-b, 123\n", "unknown GPU GPU-b"),
        ("0, GPU-a, 5, 10\n", "GPU-a\n", "expected 2 columns"),
    ],
)
def test_smi_unexpected_output_is_a_probe_error(gpus: str, apps: str, message: str) -> None:
    outputs: dict[tuple[str, ...], str] = {QUERY_GPU: gpus, QUERY_APPS: apps}
    with pytest.raises(ProbeError, match=message):
        SmiProbe(lambda argv: outputs[tuple(argv)]).read()


def test_smi_unresolvable_pid_still_counts_as_a_process() -> None:
    outputs: dict[tuple[str, ...], str] = {
        QUERY_GPU: "0, GPU-a, 0, 900\n",
        QUERY_APPS: "GPU-a, [N/A]\n\n",
    }
    assert SmiProbe(lambda argv: outputs[tuple(argv)]).read() == (
        Gpu(index=0, util=0.0, mem_used_mib=900.0, procs=1, pids=()),
    )


def test_run_command_failure_carries_the_message_into_the_probe_error() -> None:
    """The real runner, against a stand-in that prints and exits the way nvidia-smi does."""
    script = 'echo "NVIDIA-SMI has failed because it couldn\'t communicate"; exit 9'
    with pytest.raises(ProbeError, match=r"exited 9: NVIDIA-SMI has failed"):
        SmiProbe(lambda argv: run_command(["sh", "-c", script])).read()
    assert run_command(["sh", "-c", "printf '0, GPU-a, 1, 2\\n'"]) == "0, GPU-a, 1, 2\n"


def test_real_nvidia_smi_missing_here_reads_as_no_gpus() -> None:
    if shutil.which("nvidia-smi") is not None:
        pytest.skip("nvidia-smi is installed on this machine")
    assert SmiProbe().read() == ()


# --- choosing ----------------------------------------------------------------------------------


def test_auto_probe_prefers_nvml_and_keeps_its_init(fake: FakeNvml) -> None:
    probe = auto_probe(which=lambda _: "/usr/bin/nvidia-smi")
    assert isinstance(probe, NvmlProbe)
    assert len(probe.read()) == 1
    assert fake.inits == 1


@pytest.mark.parametrize(
    "error", [pynvml.NVMLError_DriverNotLoaded, pynvml.NVMLError_LibRmVersionMismatch]
)
def test_auto_probe_stays_with_nvml_when_the_library_loads(
    fake: FakeNvml, error: type[Exception]
) -> None:
    fake.init_error = error()
    assert isinstance(auto_probe(which=lambda _: "/usr/bin/nvidia-smi"), NvmlProbe)


def test_auto_probe_falls_back_to_nvidia_smi(fake: FakeNvml) -> None:
    fake.init_error = pynvml.NVMLError_LibraryNotFound()
    probe = auto_probe(which=lambda _: "/usr/bin/nvidia-smi", run=replay("t4-busy"))
    assert isinstance(probe, SmiProbe)
    assert probe.read()[0].util == 98.0


def test_auto_probe_without_either_says_no_gpus_once(
    fake: FakeNvml, logs: Sequence[Mapping[str, object]]
) -> None:
    fake.init_error = pynvml.NVMLError_LibraryNotFound()
    probe = auto_probe(which=lambda _: None)
    assert isinstance(probe, NoGpuProbe)
    assert [probe.read() for _ in range(3)] == [(), (), ()]
    assert [e["event"] for e in logs] == ["no GPUs"]


def test_auto_probe_on_this_machine_reads() -> None:
    """Unpatched: whatever this machine has, the chosen probe reads without raising."""
    probe = auto_probe()
    gpus = probe.read()
    if isinstance(probe, NoGpuProbe):
        assert gpus == ()
