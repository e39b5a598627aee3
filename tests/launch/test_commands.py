"""ssh, tunnel, start, stop, install-agent and audit against moto, ssh and scp faked on PATH."""

from __future__ import annotations

import json
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import AMI, ec2, state, tags_of
from tests.launch.world import REGION, World, cli, ec2_error, named, publish_dlami
from watchdog.core.fleet import TAG_IDLE_MINUTES, TAG_MANAGED
from watchdog.launch import commands as launch_cli
from watchdog.launch import plan
from watchdog.launch.plan import REMOTE_INSTALL_DIR, agent_files


def address(name: str) -> str:
    [instance] = named(name)
    return str(instance["PublicIpAddress"])


def test_ssh_and_tunnel_look_up_the_current_address(
    world: World, fake_ssh: Callable[[], list[list[str]]]
) -> None:
    publish_dlami()
    assert world.launch("--name", "box").code == 0
    [instance] = named("box")
    key = str(world.ssh_dir / "idle-watchdog-us-east-1.pem")
    ssh_dir = ["--ssh-dir", str(world.ssh_dir)]

    assert world.cli("ssh", *ssh_dir, "box", "nvidia-smi", "-L").code == 0
    tunnel = world.cli("tunnel", instance["InstanceId"], *ssh_dir)
    assert tunnel.code == 0
    assert "http://localhost:8888/" in tunnel.err
    ip = address("box")
    ssh, forward = fake_ssh()
    assert ssh[0] == "ssh"
    assert ssh[1:3] == ["-i", key]
    assert f"HostKeyAlias={instance['InstanceId']}" in ssh
    assert ssh[-3:] == [f"ubuntu@{ip}", "nvidia-smi", "-L"]
    assert forward[0] == "ssh"
    assert forward[-4:] == ["-N", "-L", "8888:localhost:8888", f"ubuntu@{ip}"]

    # Stopped: no address to go to, and the answer says what to do.
    assert world.cli("stop", "box").code == 0
    refused = world.cli("ssh", *ssh_dir, "box")
    assert refused.code == 1
    assert "is stopped" in refused.err
    assert "idle-watchdog start box" in refused.err
    assert len(fake_ssh()) == 2

    # Started again: a new address, printed, and used by the next ssh.
    started = world.cli("start", "box", *ssh_dir)
    assert started.code == 0, started.err
    new_ip = address("box")
    assert new_ip != ip
    assert new_ip in started.out
    assert world.cli("ssh", *ssh_dir, "box").code == 0
    assert fake_ssh()[-1][-1] == f"ubuntu@{new_ip}"


def test_ssh_passes_on_ssh_exit_code_and_finds_nothing_plainly(
    world: World, fake_ssh: Callable[[], list[list[str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_dlami()
    assert world.launch("--name", "box").code == 0
    monkeypatch.setenv("FAKE_SSH_EXIT", "255")
    assert world.cli("ssh", "box").code == 255
    missing = world.cli("ssh", "nobody")
    assert missing.code == 1
    assert "no instance 'nobody'" in missing.err


def test_ssh_config_is_written_only_when_asked_and_follows_the_address(world: World) -> None:
    publish_dlami()
    config = world.ssh_dir / "config"
    assert world.launch("--name", "plain").code == 0
    assert not config.exists()
    assert world.launch("--name", "box", "--ssh-config").code == 0
    text = config.read_text()
    assert "Host box\n" in text
    assert f"HostName {address('box')}\n" in text
    assert f"IdentityFile {world.ssh_dir / 'idle-watchdog-us-east-1.pem'}\n" in text
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert world.cli("stop", "box").code == 0
    assert world.cli("start", "box", "--ssh-dir", str(world.ssh_dir)).code == 0
    text = config.read_text()
    assert text.count("Host box\n") == 1
    assert f"HostName {address('box')}\n" in text
    assert f"IdentityFile {world.ssh_dir / 'idle-watchdog-us-east-1.pem'}\n" in text


def test_stop_only_stops(world: World) -> None:
    publish_dlami()
    assert world.launch("--name", "box").code == 0
    [instance] = named("box")
    run = world.cli("stop", "box")
    assert run.code == 0
    assert "not terminated" in run.out
    assert state(REGION, instance["InstanceId"]) == "stopped"
    assert "StopInstances" in world.actions()
    assert "TerminateInstances" not in world.actions()
    assert world.cli("stop", "box").out.strip().endswith("is already stopped")


def test_a_one_time_spot_instance_that_cannot_stop_says_why(world: World) -> None:
    """moto stops one-time spot instances; AWS refuses (UnsupportedOperation)."""
    publish_dlami()
    assert world.launch("--name", "box", "--spot").code == 0
    world.inject(
        "before-send.ec2.StopInstances",
        ec2_error(
            "UnsupportedOperation",
            "You can't stop the Spot Instance because it is associated with a one-time "
            "Spot Instance request.",
        ),
    )
    run = world.cli("stop", "box")
    assert run.code == 1
    assert "cannot be stopped" in run.err
    assert "TerminateInstances" not in world.actions()


def test_install_agent_copies_the_script_runs_it_with_sudo_and_tags_managed(
    world: World, fake_ssh: Callable[[], list[list[str]]]
) -> None:
    from tests.helpers import launch

    [instance_id] = launch(REGION, tags={"Name": "old-box"})
    run = world.cli(
        "install-agent", "old-box", "--source", "idle-watchdog==0.1.0", "--idle-minutes", "45"
    )
    assert run.code == 0, run.err
    mkdir, scp, install = fake_ssh()
    host = f"ubuntu@{address('old-box')}"
    assert mkdir[0] == "ssh"
    assert mkdir[-4:] == [host, "mkdir", "-p", REMOTE_INSTALL_DIR]
    assert scp[0] == "scp"
    script, unit = agent_files()  # the files the package carries
    assert scp[-3:] == [str(script), str(unit), f"{host}:{REMOTE_INSTALL_DIR}/"]
    assert install[0] == "ssh"
    assert install[-2] == host
    assert install[-1] == (
        f"sudo bash {REMOTE_INSTALL_DIR}/install-agent.sh --source idle-watchdog==0.1.0 "
        f"--idle-minutes 45 --unit {REMOTE_INSTALL_DIR}/idle-watchdog-agent.service "
        "--python /usr/bin/python3"
    )
    tags = tags_of(REGION, instance_id)
    assert tags[TAG_MANAGED] == "true"
    assert tags[TAG_IDLE_MINUTES] == "45"
    assert "no instance profile" in run.err  # the agent could not publish without one


def test_install_agent_that_fails_tags_nothing(
    world: World, fake_ssh: Callable[[], list[list[str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers import launch

    [instance_id] = launch(REGION, tags={"Name": "old-box"})
    monkeypatch.setenv("FAKE_SCP_EXIT", "1")
    run = world.cli("install-agent", instance_id)
    assert run.code == 1
    assert "step 2 (scp) failed" in run.err
    assert [c[0] for c in fake_ssh()] == ["ssh", "scp"]  # the script never ran
    assert TAG_MANAGED not in tags_of(REGION, instance_id)


# --- audit against moto ---------------------------------------------------------------------


def test_audit_finds_world_open_jupyter_and_missing_imdsv2(world: World) -> None:
    client = ec2()
    group_id = client.create_security_group(GroupName="notebook", Description="oops")["GroupId"]
    client.authorize_security_group_ingress(
        GroupId=group_id,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 8888,
                "ToPort": 8888,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            }
        ],
    )
    reservation = client.run_instances(
        ImageId=AMI, MinCount=1, MaxCount=1, InstanceType="g5.xlarge", SecurityGroupIds=[group_id]
    )
    instance_id = reservation["Instances"][0]["InstanceId"]
    run = world.cli("audit")
    assert run.code == 1
    first = run.out.splitlines()[0]
    assert first.startswith(
        f"[critical] {REGION} {group_id}: notebook opens port 8888 to 0.0.0.0/0"
    )
    assert instance_id in first
    assert f"[medium] {REGION} {instance_id}" in run.out
    assert "IMDSv1" in run.out

    document = json.loads(world.cli("audit", "--json").out)
    kinds = {(f["kind"], f["resource"]) for f in document["findings"]}
    assert kinds == {("world-open", group_id), ("imdsv1", instance_id)}


def test_audit_passes_what_the_launcher_creates(world: World) -> None:
    publish_dlami()
    assert world.launch("--name", "box").code == 0
    run = world.cli("audit")
    assert run.code == 0, run.out
    assert "no findings" in run.out


# --- before any AWS call: credentials, then the caller's address ---------------------


def test_without_credentials_every_command_says_how_to_set_them_and_asks_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No keys in the environment, empty credentials and config files: `launch` says
    so before it asks checkip for the caller's address (it used to ask first and
    print urllib3's error when offline), and so do the commands that look up."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    empty = tmp_path / "empty"
    empty.write_text("")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    asked: list[str] = []

    def checkip() -> str:
        asked.append("checkip")
        return "203.0.113.7"

    monkeypatch.setattr(launch_cli.EDGES, "caller_ip", checkip)
    ssh_dir = ["--ssh-dir", str(tmp_path / "ssh")]
    for argv in (
        ["launch", "--type", "g5.xlarge", *ssh_dir],
        ["ssh", "box", *ssh_dir],
        ["stop", "box"],
        ["audit"],
    ):
        run = cli(capsys, *argv)
        assert run.code == 1, argv
        assert "no AWS credentials found" in run.err, argv
        for hint in ("aws configure", "aws sso login", "AWS_PROFILE"):
            assert hint in run.err, (argv, hint)
        assert "Traceback" not in run.err
    assert asked == []
    assert not (tmp_path / "ssh").exists()


def test_a_failed_address_lookup_is_one_clear_line_not_urllib3s_error(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """checkip unreachable (here: a local port bound but not listening, so the
    connection is refused at once): the person learns to pass --allow-cidr."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/"
        monkeypatch.setattr(plan, "CHECKIP_URL", url)
        monkeypatch.setattr(launch_cli.EDGES, "caller_ip", launch_cli.fetch_checkip)
        run = world.launch("--name", "box")
    assert run.code == 1
    assert f"could not connect to {url}" in run.err
    assert "--allow-cidr" in run.err
    for noise in ("urllib3", "HTTPConnectionPool", "Max retries", "Traceback"):
        assert noise not in run.err
    assert len(run.err.strip().splitlines()) == 1
    assert world.sent == []  # nothing asked of AWS, nothing created


def test_a_profile_that_does_not_exist_is_named_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_PROFILE", "nope")
    run = cli(capsys, "stop", "box")
    assert run.code == 1
    assert "The config profile (nope) could not be found" in run.err
    assert "aws configure list-profiles" in run.err
