"""The launcher's commands: launch, ssh, tunnel, start, stop, install-agent, audit.

Each is one function ``(args, cfg) -> exit code`` like those in cli.py, and
``add_commands`` registers them. The decisions live in ``plan``, ``steps``,
``ssh`` and ``audit``; here are only argument parsing, printing, and the edges
a test replaces through ``EDGES``: the caller's address (checkip.amazonaws.com),
the ssh/scp runner, the AWS account (``watchdog.aws.launching``) and the clock.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from watchdog.config import Config
from watchdog.core.fleet import TAG_IDLE_MINUTES, TAG_MANAGED
from watchdog.launch import plan as P
from watchdog.launch import ssh as S
from watchdog.launch import steps
from watchdog.launch.audit import Finding
from watchdog.launch.errors import LaunchError, UsageError, translated
from watchdog.launch.steps import Found, Progress

if TYPE_CHECKING:
    from watchdog.aws.launching import LauncherAws

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_ME = "idle-watchdog"
_PLACEHOLDER = "192.0.2.1"  # TEST-NET-1: stands in for the caller while checking options


def fetch_checkip() -> str:
    """The caller's public IPv4 address as AWS sees it.

    Fails with an ``OSError`` whose message is one short reason, never
    urllib3's retry chain (which ``caller_cidr`` would otherwise print).
    """
    import requests

    url = P.CHECKIP_URL

    try:
        answer = requests.get(url, timeout=10)
        answer.raise_for_status()
    except requests.Timeout as exc:
        raise OSError(f"{url} did not answer within 10 s") from exc
    except requests.ConnectionError as exc:
        raise OSError(f"could not connect to {url}: no network, or it is blocked") from exc
    except requests.HTTPError as exc:
        raise OSError(f"{url} answered HTTP {answer.status_code}") from exc
    except requests.RequestException as exc:
        raise OSError(f"could not ask {url} ({type(exc).__name__})") from exc
    return answer.text


def run_program(argv: Sequence[str]) -> int:
    """Run ssh or scp in the foreground, as a child: its exit code is ours, and Ctrl-C
    (which ends a tunnel) reaches it through the terminal's process group."""
    try:
        return subprocess.run(list(argv), check=False).returncode
    except FileNotFoundError:
        print(f"{_ME}: {argv[0]} not found: install the OpenSSH client", file=sys.stderr)
        return 127
    except KeyboardInterrupt:
        return 130


def make_aws(cfg: Config) -> LauncherAws:
    from watchdog.aws.launching import LauncherAws  # boto3: only when a command runs

    return LauncherAws.from_profile(cfg.aws.profile)


@dataclass
class Edges:
    """Everything here that touches the world outside AWS's API; tests swap these."""

    caller_ip: Callable[[], str] = fetch_checkip
    run: Callable[[Sequence[str]], int] = run_program
    aws: Callable[[Config], LauncherAws] = make_aws
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic


EDGES = Edges()


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    """Register the launcher's commands on the main parser's subcommands."""
    launch = sub.add_parser(
        "launch",
        parents=[common],
        help="launch a GPU instance with the agent installed",
        description="Launch an on-demand or spot instance (default AMI: the region's current "
        "Deep Learning Base OSS Nvidia Driver GPU AMI, Ubuntu 22.04) with the agent installed "
        "by cloud-init, IMDSv2 required, SSH open to your address only and Jupyter reached "
        "through an SSH tunnel. Creates or reuses a key pair, a security group and the "
        "agent's instance role.",
    )
    launch.add_argument(
        "--type", dest="instance_type", required=True, metavar="TYPE", help="e.g. g5.xlarge"
    )
    launch.add_argument("--region", help="default: the first of [aws] regions")
    launch.add_argument("--name", help="the Name tag and ssh host name (default: from the type)")
    launch.add_argument("--spot", action="store_true", help="a spot instance (one-time request)")
    launch.add_argument(
        "--persistent",
        action="store_true",
        help="with --spot: a persistent request that stops (not terminates) on interruption, "
        "so the instance can be stopped and started",
    )
    launch.add_argument(
        "--idle-minutes", type=int, metavar="N", help="idle threshold (default: [idle] minutes)"
    )
    launch.add_argument(
        "--disk-gb", type=int, metavar="GB", help="root volume size (default: the AMI's)"
    )
    launch.add_argument("--ami", metavar="AMI_ID", help="default: the current Deep Learning AMI")
    launch.add_argument(
        "--allow-cidr",
        metavar="CIDR",
        help="who may SSH in (default: your address, from checkip.amazonaws.com)",
    )
    launch.add_argument(
        "--source",
        default="idle-watchdog",
        metavar="SPEC",
        help="what pip installs as the agent (default: idle-watchdog from PyPI)",
    )
    launch.add_argument(
        "--dry-run",
        action="store_true",
        help="check permissions and parameters with EC2's DryRun; create nothing",
    )
    launch.add_argument(
        "--ssh-config", action="store_true", help="also add a Host entry to ~/.ssh/config"
    )
    _ssh_dir_option(launch)
    launch.set_defaults(func=cmd_launch)

    ssh = sub.add_parser("ssh", parents=[common], help="ssh to an instance by name or id")
    _target_options(ssh)
    ssh.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        help="a command to run there; as with ssh itself, options go before NAME|ID",
    )
    ssh.set_defaults(func=cmd_ssh)

    tunnel = sub.add_parser(
        "tunnel", parents=[common], help="forward Jupyter (8888) from an instance over ssh"
    )
    _target_options(tunnel)
    tunnel.add_argument("--port", type=int, default=8888, help="local port (default 8888)")
    tunnel.add_argument(
        "--remote-port", type=int, default=8888, help="Jupyter's port there (default 8888)"
    )
    tunnel.set_defaults(func=cmd_tunnel)

    start = sub.add_parser(
        "start", parents=[common], help="start an instance and print its new address"
    )
    _target_options(start, user=False)
    start.set_defaults(func=cmd_start)

    stop = sub.add_parser("stop", parents=[common], help="stop (never terminate) an instance")
    _target_options(stop, user=False, ssh_dir=False)
    stop.set_defaults(func=cmd_stop)

    install = sub.add_parser(
        "install-agent",
        parents=[common],
        help="install the agent on an existing instance over ssh and tag it managed",
    )
    _target_options(install)
    install.add_argument(
        "--source",
        default="idle-watchdog",
        metavar="SPEC",
        help="what pip installs (default: idle-watchdog from PyPI)",
    )
    install.add_argument(
        "--idle-minutes", type=int, metavar="N", help="idle threshold (default: [idle] minutes)"
    )
    install.set_defaults(func=cmd_install_agent)

    audit = sub.add_parser(
        "audit",
        parents=[common],
        help="find world-open security group rules and IMDSv1 on instances",
        description="Checks every instance that is not terminated in the configured regions, "
        "managed or not (an open Jupyter is as dangerous on an unwatched machine): security "
        "groups attached to them that open any port to 0.0.0.0/0 or ::/0 (8888 first), and "
        "instances that allow IMDSv1. Exits 1 when it finds anything.",
    )
    audit.add_argument("--region", action="append", default=[], help="only this region; repeatable")
    audit.add_argument("--json", action="store_true", help="one JSON document")
    audit.set_defaults(func=cmd_audit)


def _ssh_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ssh-dir",
        type=Path,
        metavar="DIR",
        help="where key files and the ssh config live (default: ~/.ssh)",
    )


def _target_options(
    parser: argparse.ArgumentParser, *, user: bool = True, ssh_dir: bool = True
) -> None:
    parser.add_argument("target", metavar="NAME|ID", help="Name tag, instance id, or address")
    parser.add_argument("--region", help="look only here (default: every [aws] region)")
    if user:
        parser.add_argument("--user", default="ubuntu", help="login user (default: ubuntu)")
    if ssh_dir:
        _ssh_dir_option(parser)


def _ssh_dir(args: argparse.Namespace) -> Path:
    chosen: Path | None = getattr(args, "ssh_dir", None)
    return chosen.expanduser() if chosen else Path.home() / ".ssh"


def _fail(message: str) -> None:
    print(f"{_ME}: {message}", file=sys.stderr)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _progress(label: str) -> Progress:
    """One line per state on a pipe; one line rewritten in place on a terminal."""
    tty = sys.stderr.isatty()
    last = [""]

    def show(state: str, elapsed: float) -> None:
        if tty:
            end = "\n" if state == "running" else ""
            sys.stderr.write(f"\r{label}: {state} ({int(elapsed)} s) {end}")
            sys.stderr.flush()
        elif state != last[0]:
            print(f"{label}: {state} ({int(elapsed)} s)", file=sys.stderr, flush=True)
        last[0] = state

    return show


def _guarded(run: Callable[[], int]) -> int:
    """Run a command body; a ``LaunchError`` is printed, never a traceback."""
    try:
        return run()
    except UsageError as exc:
        _fail(str(exc))
        return EXIT_USAGE
    except LaunchError as exc:
        _fail(str(exc))
        return EXIT_FAILED


def _aws(cfg: Config) -> LauncherAws:
    """The AWS account, once credentials are known to exist: without them every
    command says how to set them, before asking anything else (checkip included)."""
    with translated():
        aws = EDGES.aws(cfg)
        aws.check_credentials()
    return aws


def _find_one(args: argparse.Namespace, cfg: Config, aws: LauncherAws) -> Found:
    regions = [args.region] if args.region else list(cfg.aws.regions)
    found = steps.find_instances(aws, regions, args.target)
    if not found:
        raise LaunchError(
            f"no instance {args.target!r} (not terminated) in {', '.join(regions)}"
            + ("" if args.region else "; pass --region if it is elsewhere")
        )
    if len(found) > 1:
        listed = ", ".join(f"{f.id} ({f.region}, {f.state})" for f in found)
        raise UsageError(f"{args.target!r} names several instances: {listed}; give the id")
    return found[0]


def _reachable(found: Found, ref: str) -> str:
    if found.state != "running":
        hint = f": `{_ME} start {ref}` first" if found.state == "stopped" else ""
        raise LaunchError(f"{found.name or found.id} ({found.id}) is {found.state}{hint}")
    if not found.host:
        raise LaunchError(
            f"{found.id} has no public address: reach it through a bastion or SSM Session Manager"
        )
    return found.host


def _key_path(found: Found, ssh_dir: Path) -> Path | None:
    """The launcher's key file for the instance's key pair, if this machine has it."""
    if not found.key_name:
        return None
    path = ssh_dir / f"{found.key_name}.pem"
    return path if path.exists() else None


def cmd_launch(args: argparse.Namespace, cfg: Config) -> int:

    def body() -> int:
        region = args.region or cfg.aws.regions[0]
        idle = args.idle_minutes if args.idle_minutes is not None else cfg.idle.minutes
        templates = P.Templates.load()
        options = P.LaunchOptions(
            region=region,
            instance_type=args.instance_type,
            ssh_cidr=args.allow_cidr or _PLACEHOLDER,
            name=args.name or "",
            idle_minutes=idle,
            disk_gb=args.disk_gb,
            spot=args.spot,
            persistent=args.persistent,
            ami=args.ami or "",
            source=args.source,
        )
        P.plan_launch(options, templates)  # usage errors before any network call
        aws = _aws(cfg)  # then no credentials, before asking checkip
        if not args.allow_cidr:
            options = replace(options, ssh_cidr=P.caller_cidr(EDGES.caller_ip))
        if region not in cfg.aws.regions:
            _say(
                f"note: {region} is not in [aws] regions of your config "
                f"({', '.join(cfg.aws.regions)}): the scheduler will not watch this "
                "instance until you add it"
            )
        ssh_dir = _ssh_dir(args)
        launched = steps.launch(
            aws,
            options,
            templates,
            ssh_dir=ssh_dir,
            dry_run=args.dry_run,
            sleep=EDGES.sleep,
            clock=EDGES.clock,
            say=_say,
            progress=_progress("waiting for running"),
        )
        if launched is None:
            return EXIT_OK
        print(S.connection_help(launched))
        if args.ssh_config:
            config = ssh_dir / "config"
            block = S.ssh_config_block(
                launched.name,
                launched.public_ip or launched.public_dns,
                user=launched.user,
                key_path=launched.key_path,
                instance_id=launched.instance_id,
            )
            S.update_ssh_config_file(config, launched.name, block)
            print(f"  {config}: Host {launched.name} added (`ssh {launched.name}` works now)")
        return EXIT_OK

    return _guarded(body)


def cmd_ssh(args: argparse.Namespace, cfg: Config) -> int:

    def body() -> int:
        found = _find_one(args, cfg, _aws(cfg))
        host = _reachable(found, args.target)
        command = list(args.command)
        if command[:1] == ["--"]:
            command = command[1:]
        key = _key_path(found, _ssh_dir(args))
        argv = S.ssh_argv(host, user=args.user, instance_id=found.id, key_path=key, command=command)
        return EDGES.run(argv)

    return _guarded(body)


def cmd_tunnel(args: argparse.Namespace, cfg: Config) -> int:

    def body() -> int:
        found = _find_one(args, cfg, _aws(cfg))
        host = _reachable(found, args.target)
        argv = S.tunnel_argv(
            host,
            user=args.user,
            instance_id=found.id,
            key_path=_key_path(found, _ssh_dir(args)),
            local_port=args.port,
            remote_port=args.remote_port,
        )
        _say(
            f"Jupyter on {found.name or found.id}: http://localhost:{args.port}/ "
            "(Ctrl-C closes the tunnel)"
        )
        return EDGES.run(argv)

    return _guarded(body)


def cmd_start(args: argparse.Namespace, cfg: Config) -> int:

    def body() -> int:
        aws = _aws(cfg)
        found = _find_one(args, cfg, aws)
        label = found.name or found.id
        if found.state == "stopping":
            raise LaunchError(f"{label} is still stopping; start it once it is stopped")
        started = steps.start(
            aws.region(found.region),
            found,
            sleep=EDGES.sleep,
            clock=EDGES.clock,
            progress=_progress(f"starting {found.id}"),
        )
        print(f"{label} ({started.id}) is running in {started.zone}: {started.host}")
        print(f"  ssh: {_ME} ssh {args.target}    jupyter: {_ME} tunnel {args.target}")
        config = _ssh_dir(args) / "config"
        text = config.read_text(encoding="utf-8") if config.exists() else ""
        entry = S.ssh_config_entry(text, started.name) if started.name else {}
        if entry and started.host:  # written by `launch --ssh-config`: follow the address
            block = S.ssh_config_block(
                started.name,
                started.host,
                user=entry.get("User", P.SSH_USER),
                key_path=Path(entry.get("IdentityFile", f"{started.key_name}.pem")),
                instance_id=started.id,
            )
            S.update_ssh_config_file(config, started.name, block)
            print(f"  {config}: Host {started.name} now points at {started.host}")
        return EXIT_OK

    return _guarded(body)


def cmd_stop(args: argparse.Namespace, cfg: Config) -> int:

    def body() -> int:
        aws = _aws(cfg)
        found = _find_one(args, cfg, aws)
        label = f"{found.name or found.id} ({found.id})"
        if found.state in ("stopping", "stopped"):
            print(f"{label} is already {found.state}")
            return EXIT_OK
        state = steps.stop(aws.region(found.region), found)
        print(
            f"{label}: {state}. Stopped, not terminated: its disk stays (and is billed); "
            f"`{_ME} start {args.target}` brings it back"
        )
        return EXIT_OK

    return _guarded(body)


def cmd_install_agent(args: argparse.Namespace, cfg: Config) -> int:
    def body() -> int:
        aws = _aws(cfg)
        found = _find_one(args, cfg, aws)
        host = _reachable(found, args.target)
        idle = args.idle_minutes if args.idle_minutes is not None else cfg.idle.minutes
        if not 1 <= idle <= 7 * 24 * 60:
            raise UsageError("--idle-minutes must be from 1 to 10080")
        if any(c in args.source for c in "\n\r") or not args.source.strip():
            raise UsageError("--source must be a single non-empty line")
        script, unit = P.agent_files()
        commands = S.install_commands(
            host,
            user=args.user,
            instance_id=found.id,
            key_path=_key_path(found, _ssh_dir(args)),
            script=script,
            unit=unit,
            source=args.source,
            idle_minutes=idle,
        )
        for number, argv in enumerate(commands, start=1):
            _say(f"[{number}/{len(commands)}] {argv[0]} ... {argv[-1][:60]}")
            code = EDGES.run(argv)
            if code != 0:
                raise LaunchError(
                    f"step {number} ({argv[0]}) failed with exit code {code}; nothing was tagged"
                )
        tags = {TAG_MANAGED: "true", TAG_IDLE_MINUTES: str(idle)}
        steps.tag_managed(aws.region(found.region), found, tags)
        print(
            f"{found.name or found.id} ({found.id}): agent installed; tagged "
            f"{TAG_MANAGED}=true, {TAG_IDLE_MINUTES}={idle}"
        )
        if not found.profile_arn:
            _say(
                f"warning: {found.id} has no instance profile, so the agent cannot write its "
                "heartbeat or stop itself. Attach one: aws ec2 associate-iam-instance-profile "
                f"--instance-id {found.id} --iam-instance-profile Name={P.ROLE_NAME} "
                f"--region {found.region} (`{_ME} launch` creates it; see deploy/iam/README.md)"
            )
        return EXIT_OK

    return _guarded(body)


def cmd_audit(args: argparse.Namespace, cfg: Config) -> int:

    def body() -> int:
        regions = list(args.region) or list(cfg.aws.regions)
        aws = _aws(cfg)
        findings: list[Finding] = []
        errors: dict[str, str] = {}
        for region in regions:  # one failing region never hides the others
            try:
                findings.extend(steps.audit_region(aws.region(region)))
            except LaunchError as exc:
                errors[region] = str(exc)
        if args.json:
            document = {
                "regions": regions,
                "findings": [f.to_json() for f in findings],
                "region_errors": errors,
            }
            print(json.dumps(document, indent=2))
        else:
            for f in findings:
                where = f" (instances: {', '.join(f.instances)})" if f.kind == "world-open" else ""
                print(f"[{f.severity_name}] {f.region} {f.resource}: {f.detail}{where}")
                print(f"    fix: {f.fix}")
            for region, error in errors.items():
                _fail(f"region {region} not audited: {error}")
            if not findings and not errors:
                print(
                    f"no findings in {', '.join(regions)}: no world-open rules on instances' "
                    "security groups, and IMDSv2 required everywhere"
                )
        return EXIT_FAILED if findings or errors else EXIT_OK

    return _guarded(body)
