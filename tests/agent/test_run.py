"""The agent's loop against a moto server: heartbeat, telling terminals, the backstop."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import MANAGED, config, ec2, launch, state, tag, tags_of
from watchdog.agent.imds import Identity
from watchdog.agent.run import Agent, AgentState
from watchdog.aws.ec2 import Boto3Ec2
from watchdog.aws.fake import set_launch_time
from watchdog.core import heartbeat as hb
from watchdog.core.fleet import TAG_HEARTBEAT, TAG_KEEP_UNTIL, TAG_STOPPED, Instance
from watchdog.core.sample import Gpu, Kernel, Sample
from watchdog.core.timeutil import iso

pytestmark = pytest.mark.usefixtures("aws")

CFG = config(idle={"minutes": 30, "warn_minutes": 10}, agent={"backstop_minutes": 120})
M = timedelta(minutes=1)


class Script:
    """A sample source: the GPU is busy until ``busy_until``, then nothing happens."""

    def __init__(self, busy_until: datetime):
        self.busy_until = busy_until

    def read(self, now: datetime) -> Sample:
        util = 90.0 if now <= self.busy_until else 0.0
        return Sample(now, gpus=(Gpu(0, util, 12000.0, 1),))


class World:
    def __init__(self, tmp_path: Path, *, tags: dict[str, str] | None = None):
        self.iid = launch("us-east-1", tags=tags if tags is not None else MANAGED)[0]
        self.start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=4)
        set_launch_time("us-east-1", self.iid, self.start)
        self.told: list[str] = []
        self.state_path = tmp_path / "agent.json"

    def agent(self, busy_minutes: int = 5) -> Agent:
        return Agent(
            CFG,
            Script(self.start + busy_minutes * M),
            identity=Identity(self.iid, "us-east-1", "on-demand"),
            ec2=Boto3Ec2(),
            state_path=self.state_path,
            started_at=self.start,
            tell=self.told.append,
        )

    def at(self, minutes: float) -> datetime:
        return self.start + minutes * M

    def run(self, agent: Agent, minutes: list[float]) -> None:
        for m in minutes:
            agent.step(self.at(m))


def test_heartbeat_then_a_word_to_terminals_then_the_backstop_stops(tmp_path: Path) -> None:
    world = World(tmp_path)
    agent = world.agent(busy_minutes=5)
    world.run(agent, [1, 5])
    beat = hb.decode(tags_of("us-east-1", world.iid)[TAG_HEARTBEAT])
    assert beat.active is True and beat.reasons == ("gpu:0",)

    world.run(agent, [24])  # idle since minute 5: the scheduler would warn at 25
    assert world.told == []
    world.run(agent, [25, 26])
    assert len(world.told) == 1
    assert "idle for 20m" in world.told[0]
    assert "scheduler will stop it at " + iso(world.at(35)) in world.told[0]
    assert "idle-watchdog keep --for 2h" in world.told[0]
    assert state("us-east-1", world.iid) == "running"  # the agent itself only told

    world.run(agent, [114, 115, 116])  # the backstop warns 10 minutes before minute 125
    assert len(world.told) == 2 and "the agent will stop it at" in world.told[1]
    assert state("us-east-1", world.iid) == "running"

    world.run(agent, [125])
    assert state("us-east-1", world.iid) in ("stopping", "stopped")
    assert "agent backstop" in tags_of("us-east-1", world.iid)[TAG_STOPPED]


def test_a_restarted_agent_remembers_when_work_last_happened(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.run(world.agent(busy_minutes=5), [1, 5, 24, 25])
    assert AgentState.load(world.state_path).last_active_at == world.at(5)
    again = world.agent(busy_minutes=0)  # a fresh process; its script never saw the work
    report = again.step(world.at(27))
    assert report.last_active_at == world.at(5)
    assert len(world.told) == 1  # the warning it already gave is not repeated


@pytest.mark.parametrize(
    "extra",
    [
        {TAG_KEEP_UNTIL: "2999-01-01T00:00:00Z"},
        {"idle-watchdog:exempt": ""},
        {"idle-watchdog:managed": "false"},
    ],
    ids=["kept", "exempt", "unmanaged"],
)
def test_the_backstop_leaves_alone_what_the_scheduler_would(
    tmp_path: Path, extra: dict[str, str]
) -> None:
    world = World(tmp_path, tags={**MANAGED, **extra})
    world.run(world.agent(), [1, 125, 140, 200])
    assert state("us-east-1", world.iid) == "running"
    assert world.told == []


def test_a_one_time_spot_instance_is_never_stopped(tmp_path: Path) -> None:
    """moto launches no spot lifecycle for run_instances; EC2's answer says "spot" here."""

    class SpotView(Boto3Ec2):
        def describe(self, region: str, instance_id: str) -> Instance | None:
            found = super().describe(region, instance_id)
            return replace(found, lifecycle="spot") if found else None

    world = World(tmp_path)
    agent = world.agent()
    agent.ec2 = SpotView()
    world.run(agent, [1, 130, 200])
    assert state("us-east-1", world.iid) == "running"


def test_a_spot_interruption_notice_is_told_once(tmp_path: Path) -> None:
    """IMDS answers 404 until AWS announces the interruption, then a 200 notice."""
    import json as jsonlib
    import threading

    from tests.agent.test_imds import FakeImds
    from watchdog.agent.imds import Imds

    fake = FakeImds()
    threading.Thread(target=fake.server.serve_forever, daemon=True).start()
    try:
        world = World(tmp_path)
        agent = world.agent()
        agent.identity = Identity(world.iid, "us-east-1", "spot")
        agent.imds = Imds(fake.url)
        world.run(agent, [1, 2])
        assert world.told == []
        notice = {"action": "stop", "time": "2026-11-23T16:02:00Z"}
        fake.values["/latest/meta-data/spot/instance-action"] = jsonlib.dumps(notice)
        world.run(agent, [3, 4])
        assert len(world.told) == 1
        assert "AWS will stop this spot instance at 2026-11-23T16:02:00Z" in world.told[0]
    finally:
        fake.server.shutdown()
        fake.server.server_close()


def test_a_garbled_idle_minutes_tag_keeps_the_backstop_out(tmp_path: Path) -> None:
    """The scheduler says "not stopping until it is fixed": so does the backstop."""
    world = World(tmp_path, tags={**MANAGED, "idle-watchdog:idle-minutes": "3h"})
    world.run(world.agent(), [1, 125, 140, 300])
    assert state("us-east-1", world.iid) == "running"
    assert world.told == []


def test_the_backstop_waits_twice_the_scheduler_s_threshold(tmp_path: Path) -> None:
    world = World(tmp_path, tags={**MANAGED, "idle-watchdog:idle-minutes": "90"})
    agent = world.agent()
    assert agent.backstop_minutes(agent.ec2.describe("us-east-1", world.iid)) == 180  # type: ignore[union-attr,arg-type]
    world.run(agent, [1, 125, 140])
    assert state("us-east-1", world.iid) == "running"


def test_a_persistent_spot_instance_is_warned_and_backstopped(tmp_path: Path) -> None:
    """The agent reads its own spot request: persistent ones can be stopped."""
    answer = ec2("us-east-1").request_spot_instances(
        SpotPrice="0.5",
        Type="persistent",
        LaunchSpecification={"ImageId": "ami-12c6146b", "InstanceType": "g5.xlarge"},
    )["SpotInstanceRequests"][0]
    world = World(tmp_path)
    world.iid = answer["InstanceId"]
    tag("us-east-1", world.iid, MANAGED)
    set_launch_time("us-east-1", world.iid, world.start)
    agent = world.agent()
    world.run(agent, [1, 5, 25])
    assert len(world.told) == 1  # the scheduler's warning, on the terminals
    world.run(agent, [115, 125])
    assert state("us-east-1", world.iid) in ("stopping", "stopped")


KERNEL_CASES = [
    # (state, clients, seconds since its last message, [agent] keys, active, idle for)
    # a busy kernel: active while it spoke within the last sample, then idle from its
    # last message (a cell that computes silently counts through its CPU, GPU or I/O)
    ("busy", 1, 60, {}, True, 0),
    ("busy", 1, 61, {}, False, 61),
    ("busy", 1, 119, {"sample_seconds": 120}, True, 0),
    ("starting", 0, 61, {}, False, 61),
    # an idle kernel with a client: idle from kernel_grace_seconds after its last message
    ("idle", 1, 301, {}, True, 1),
    ("idle", 1, 361, {}, False, 61),
    ("idle", 1, 650, {"kernel_grace_seconds": 600}, True, 50),
    # nobody there to read the output: idle from its last message
    ("idle", 0, 61, {}, False, 61),
]


@pytest.mark.parametrize("case", KERNEL_CASES)
def test_how_long_a_silent_kernel_counts(tmp_path: Path, case: tuple[Any, ...]) -> None:
    """What the README says: one sample interval for a busy kernel that says nothing,
    ``kernel_grace_seconds`` for an idle one with a client; both from the config."""
    state, clients, silent, agent_cfg, active, idle_for = case
    now = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
    agent = Agent(
        config(agent=agent_cfg),
        Script(now),
        identity=None,
        ec2=None,
        state_path=tmp_path / "agent.json",
        started_at=now - timedelta(hours=1),
    )
    last = now - timedelta(seconds=silent)
    report = agent.observe(Sample(now, kernels=(Kernel("k", state, last, clients),)))
    assert report.active is active
    assert report.last_active_at == now - timedelta(seconds=idle_for)
