"""ssh, scp and ~/.ssh/config (pure): argv and the config block."""

from __future__ import annotations

from pathlib import Path

from watchdog.launch import ssh as S


def test_ssh_and_tunnel_argv_key_known_hosts_by_instance() -> None:
    key = Path("/home/me/.ssh/idle-watchdog-us-east-1.pem")
    argv = S.ssh_argv(
        "198.51.100.4", user="ubuntu", instance_id="i-0123456789abcdef0", key_path=key
    )
    assert argv[0] == "ssh"
    assert argv[-1] == "ubuntu@198.51.100.4"
    assert ["-i", str(key)] == argv[1:3]
    assert "HostKeyAlias=i-0123456789abcdef0" in argv
    assert "StrictHostKeyChecking=accept-new" in argv
    tunnel = S.tunnel_argv(
        "198.51.100.4", user="ubuntu", instance_id="i-0123456789abcdef0", key_path=None
    )
    assert "-i" not in tunnel
    assert tunnel[-4:] == ["-N", "-L", "8888:localhost:8888", "ubuntu@198.51.100.4"]


def test_ssh_config_block_is_added_first_then_replaced_in_place() -> None:
    existing = "Host *\n    User someone-else\n"
    key = Path("/k.pem")
    first = S.ssh_config_block(
        "box", "198.51.100.4", user="ubuntu", key_path=key, instance_id="i-1"
    )
    text = S.update_ssh_config(existing, "box", first)
    assert text.startswith(first)  # ahead of Host *, whose User would win otherwise
    assert text.endswith(existing)
    second = S.ssh_config_block(
        "box", "198.51.100.9", user="ubuntu", key_path=key, instance_id="i-1"
    )
    again = S.update_ssh_config(text, "box", second)
    assert again.count("Host box") == 1
    assert "HostName 198.51.100.9" in again
    assert "198.51.100.4" not in again
    assert again.endswith(existing)
    assert S.ssh_config_entry(again, "box")["IdentityFile"] == "/k.pem"
    assert S.ssh_config_entry(again, "other") == {}
