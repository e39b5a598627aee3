"""The plan (pure): names, tags, user-data and the options that cannot work."""

from __future__ import annotations

import base64
import gzip
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import AMI
from tests.launch.world import (
    CALLER,
    INSTALL,
    POLICY,
    REGION,
    UNIT,
    install_argv,
    option,
    user_data_of,
)
from watchdog.core.fleet import TAG_IDLE_MINUTES, TAG_MANAGED
from watchdog.launch import plan as P
from watchdog.launch.errors import LaunchError, UsageError

TEMPLATES = P.Templates.load()


def options(**changes: Any) -> P.LaunchOptions:
    base = P.LaunchOptions(region=REGION, instance_type="g5.xlarge", ssh_cidr=CALLER)
    return replace(base, **changes)


# --- the plan (pure) -------------------------------------------------------------------


def test_plan_names_tags_and_renders_the_cloud_init_with_every_placeholder_filled() -> None:
    plan = P.plan_launch(
        options(name="box", idle_minutes=45, source="idle-watchdog==0.1.0"), TEMPLATES
    )
    assert plan.key_name == "idle-watchdog-us-east-1"
    assert plan.key_file == "idle-watchdog-us-east-1.pem"
    assert plan.ssh_cidr == f"{CALLER}/32"
    assert dict(plan.tags) == {"Name": "box", TAG_MANAGED: "true", TAG_IDLE_MINUTES: "45"}
    assert "$" not in plan.user_data
    data = user_data_of(plan.user_data)
    argv = install_argv(data)
    assert option(argv, "--source") == "idle-watchdog==0.1.0"
    assert option(argv, "--idle-minutes") == "45"
    files = {f["path"]: f for f in data["write_files"]}
    for path, original in ((argv[1], INSTALL), (option(argv, "--unit"), UNIT)):
        assert gzip.decompress(base64.b64decode(files[path]["content"])) == original.read_bytes()
    assert len(plan.user_data.encode()) <= P.USER_DATA_LIMIT
    # Same inputs, same user-data: nothing random or time-stamped in it.
    assert (
        P.plan_launch(
            options(name="box", idle_minutes=45, source="idle-watchdog==0.1.0"), TEMPLATES
        )
        == plan
    )


def test_the_files_that_travel_ship_inside_the_package() -> None:
    """A pipx install has no checkout: the launcher reads what the package carries,
    and the checkout's deploy/ and systemd/ are the same files."""
    script, unit = P.agent_files()
    assert script.parent == unit.parent == P.DEPLOY
    assert P.DEPLOY.parent == Path(P.__file__).parents[1]
    assert script.read_bytes() == INSTALL.read_bytes()
    assert unit.read_bytes() == UNIT.read_bytes()
    assert TEMPLATES.role_policy == POLICY.read_text()


def test_plan_default_name_comes_from_the_type() -> None:
    assert P.plan_launch(options(), TEMPLATES).name == "g5-xlarge"


@pytest.mark.parametrize(
    ("spot", "persistent", "expected"),
    [
        (False, False, None),
        (
            True,
            False,
            {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"},
        ),
        (True, True, {"SpotInstanceType": "persistent", "InstanceInterruptionBehavior": "stop"}),
    ],
)
def test_plan_market_options_and_tagged_spot_request(
    spot: bool, persistent: bool, expected: dict[str, str] | None
) -> None:
    plan = P.plan_launch(options(spot=spot, persistent=persistent), TEMPLATES)
    market = plan.market_options()
    assert (market["SpotOptions"] if market else None) == expected
    kinds = {spec["ResourceType"] for spec in plan.tag_specifications()}
    assert kinds == (
        {"instance", "volume", "spot-instances-request"} if spot else {"instance", "volume"}
    )
    for spec in plan.tag_specifications():
        assert {"Key": TAG_MANAGED, "Value": "true"} in spec["Tags"]


def test_run_instances_args_require_imdsv2_and_size_the_root_volume() -> None:
    plan = P.plan_launch(options(disk_gb=200), TEMPLATES)
    args = plan.run_instances_args(
        image_id=AMI,
        subnet_id="subnet-1",
        root_device="/dev/sda1",
        group_id="sg-1",
        key_name=None,
        profile_name="idle-watchdog-agent",
    )
    assert args["MetadataOptions"]["HttpTokens"] == "required"
    assert args["SecurityGroupIds"] == ["sg-1"]
    assert "KeyName" not in args  # a dry run without the key pair yet
    assert args["IamInstanceProfile"] == {"Name": "idle-watchdog-agent"}
    assert args["BlockDeviceMappings"][0]["DeviceName"] == "/dev/sda1"
    assert args["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 200
    assert "InstanceMarketOptions" not in args


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"persistent": True}, "--spot"),
        ({"ssh_cidr": "0.0.0.0/0"}, "whole internet"),
        ({"ssh_cidr": "::/0"}, "whole internet"),
        ({"ssh_cidr": "my laptop"}, "not an IP"),
        ({"name": "two words"}, "ssh host name"),
        ({"idle_minutes": 0}, "--idle-minutes"),
        ({"disk_gb": 4}, "--disk-gb"),
        ({"source": 'x"; rm -rf /'}, "--source"),
        ({"instance_type": "G5 XL"}, "--type"),
        ({"ami": "ubuntu"}, "--ami"),
    ],
)
def test_plan_refuses_what_cannot_work(changes: dict[str, Any], words: str) -> None:
    with pytest.raises(UsageError, match=words):
        P.plan_launch(options(**changes), TEMPLATES)


def test_disk_smaller_than_the_ami_is_refused() -> None:
    P.check_disk(None, 75)
    P.check_disk(100, 75)
    with pytest.raises(UsageError, match="smaller than the AMI"):
        P.check_disk(50, 75)


def test_caller_address_becomes_a_single_host_network() -> None:
    assert P.caller_cidr(lambda: "203.0.113.7\n") == "203.0.113.7/32"
    assert P.caller_cidr(lambda: "2001:db8::1") == "2001:db8::1/128"
    with pytest.raises(LaunchError, match="--allow-cidr"):
        P.caller_cidr(lambda: "<html>captive portal</html>")

    def offline() -> str:
        raise OSError("network unreachable")

    with pytest.raises(LaunchError, match="--allow-cidr"):
        P.caller_cidr(offline)
