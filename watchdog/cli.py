"""The command line: one function per command, no decisions of its own."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from watchdog import __version__, log
from watchdog import config as configmod
from watchdog.config import Config, ConfigError
from watchdog.fleet import TAG_KEEP_UNTIL, Instance
from watchdog.timeutil import iso, parse_duration, utcnow

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        type=Path,
        help=f"config file (default: ${configmod.ENV_VAR}, then the "
        "platform's config.toml, then built-in defaults)",
    )
    parser = argparse.ArgumentParser(
        prog="idle-watchdog",
        parents=[common],
        description="Stops paying for idle cloud GPUs without ever stopping real work.",
    )
    parser.add_argument("--version", action="version", version=f"idle-watchdog {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", parents=[common], help="the scheduler daemon")
    run.add_argument("--once", action="store_true", help="make one full pass and exit")
    run.add_argument("--dry-run", action="store_true", help="decide and log; change nothing")
    run.set_defaults(func=cmd_run)

    status = sub.add_parser("status", parents=[common], help="every watched instance")
    status.add_argument("--json", action="store_true", help="one JSON document")
    status.add_argument(
        "--family",
        action="append",
        default=[],
        metavar="FAMILY",
        help="only this GPU family (g5, p4d, ...); repeatable",
    )
    status.set_defaults(func=cmd_status)

    keep = sub.add_parser("keep", parents=[common], help="snooze auto-stop for an instance")
    keep.add_argument("instance_id")
    group = keep.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--for",
        dest="duration",
        metavar="DURATION",
        help="how long to keep it running (30m, 2h, 1d)",
    )
    group.add_argument("--off", action="store_true", help="end the snooze now")
    keep.set_defaults(func=cmd_keep)

    demo = sub.add_parser(
        "demo", parents=[common], help="the whole loop on an embedded fake AWS; no account needed"
    )
    demo.set_defaults(func=cmd_demo)

    cfg = sub.add_parser("config", parents=[common], help="config file tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = cfg_sub.add_parser("check", parents=[common], help="validate a config file")
    check.add_argument("path", type=Path)
    check.set_defaults(func=cmd_config_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    log.configure()
    try:
        cfg = configmod.load(args.config) if args.func is not cmd_config_check else Config()
    except ConfigError as exc:
        print(f"idle-watchdog: {exc}", file=sys.stderr)
        return EXIT_USAGE
    code: int = args.func(args, cfg)
    return code


def _api(cfg: Config):  # type: ignore[no-untyped-def]  # boto3 imported lazily: fast --help
    from watchdog.aws.ec2 import Boto3Ec2

    return Boto3Ec2(profile=cfg.aws.profile)


def cmd_run(args: argparse.Namespace, cfg: Config) -> int:
    from watchdog.scheduler import Daemon, run_pass
    from watchdog.store import Store

    store = Store(cfg.database_path)
    dry = True if args.dry_run else None
    if args.once:
        report = run_pass(_api(cfg), store, cfg, utcnow(), dry_run=dry)
        failed = bool(report.failed_regions) or any(not d.ok for d in report.done)
        return EXIT_FAILED if failed else EXIT_OK
    asyncio.run(Daemon(_api(cfg), store, cfg, dry_run=dry).serve())
    return EXIT_OK


def cmd_status(args: argparse.Namespace, cfg: Config) -> int:
    from watchdog import status
    from watchdog.aws.ec2 import scan_regions
    from watchdog.policy import plan
    from watchdog.store import Store

    now = utcnow()
    scans = scan_regions(_api(cfg), cfg.aws.regions, cfg.aws.max_workers)
    store, dry = Store(cfg.database_path), cfg.scheduler.dry_run
    warned, noticed = store.last_told("warn", dry_run=dry), store.last_told("notice", dry_run=dry)
    planned = [
        p
        for s in scans
        for p in plan(s.instances, s.spot_requests, now, cfg, warned=warned, noticed=noticed)
    ]
    data = status.rows(planned, now, cfg, args.family)
    errors = {s.region: s.error for s in scans if s.error}
    if args.json:
        print(json.dumps({"now": iso(now), "rows": data, "region_errors": errors}, indent=2))
    else:
        print(status.table(data, now) if data else "no instances in scope")
        for region, error in errors.items():
            print(f"region {region} not scanned: {error}", file=sys.stderr)
    return EXIT_FAILED if errors else EXIT_OK


def cmd_keep(args: argparse.Namespace, cfg: Config) -> int:
    from watchdog.aws.ec2 import AwsError, scan_regions

    api = _api(cfg)
    found: Instance | None = None
    for scan in scan_regions(api, cfg.aws.regions, cfg.aws.max_workers):
        found = next((i for i in scan.instances if i.id == args.instance_id), found)
    if found is None:
        print(
            f"idle-watchdog: {args.instance_id} not found in {', '.join(cfg.aws.regions)}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    try:
        if args.off:
            api.untag(found.region, found.id, [TAG_KEEP_UNTIL])
            print(f"{found.id}: keep ended; auto-stop applies again")
            return EXIT_OK
        try:
            until = utcnow() + parse_duration(args.duration)
        except ValueError as exc:
            print(f"idle-watchdog: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if until - utcnow() > timedelta(days=365):
            print("idle-watchdog: keep for at most a year", file=sys.stderr)
            return EXIT_USAGE
        api.tag(found.region, found.id, {TAG_KEEP_UNTIL: iso(until)})
    except AwsError as exc:
        print(f"idle-watchdog: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{found.id}: kept running until {iso(until)}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, cfg: Config) -> int:
    from watchdog import demo

    return demo.main()


def cmd_config_check(args: argparse.Namespace, cfg: Config) -> int:
    try:
        configmod.load(args.path)
    except ConfigError as exc:
        print(f"idle-watchdog: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{args.path}: ok")
    return EXIT_OK
