"""The command line: one function per command, no decisions of its own."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from watchdog import __version__, log
from watchdog import config as configmod
from watchdog.config import Config, ConfigError
from watchdog.core.fleet import TAG_KEEP_UNTIL, Instance
from watchdog.core.timeutil import human, iso, parse_duration, utcnow

if TYPE_CHECKING:
    from watchdog.agent.imds import Identity

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
KEEP_MAX_DAYS = 365  # the longest `keep --for`: the one limit, in its help and its error


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        type=Path,
        # SUPPRESS: a subcommand's copy of the option must not overwrite the value given
        # before the subcommand with its default, so `--config` works on either side.
        default=argparse.SUPPRESS,
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
    run.set_defaults(func=cmd_run, aws=True)

    status = sub.add_parser("status", parents=[common], help="every watched instance")
    status.add_argument("--json", action="store_true", help="one JSON document")
    status.add_argument(
        "--family",
        action="append",
        default=[],
        metavar="FAMILY",
        help="only this GPU family (g5, p4d, ...); repeatable",
    )
    status.set_defaults(func=cmd_status, aws=True)

    report = sub.add_parser(
        "report", parents=[common], help="what each instance cost, and what stopping saved"
    )
    report.add_argument(
        "--since",
        metavar="WHEN",
        help="start: 30d (the default), 12h, a date (2026-11-01) or a UTC time",
    )
    report.add_argument("--until", metavar="WHEN", help="end (default: now); a date counts whole")
    report.add_argument("--json", action="store_true", help="the report-json/1 document")
    report.add_argument(
        "--html", metavar="PATH", type=Path, help="also write a self-contained HTML page"
    )
    report.add_argument(
        "--reconcile",
        action="store_true",
        help="beside AWS Cost Explorer's figure (one GetCostAndUsage call: $0.01)",
    )
    report.set_defaults(func=cmd_report)

    keep = sub.add_parser("keep", parents=[common], help="snooze auto-stop for an instance")
    keep.add_argument(
        "instance_id", nargs="?", help="the instance (default: this one, on an instance)"
    )
    group = keep.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--for",
        dest="duration",
        metavar="DURATION",
        type=_keep_for,  # checked while parsing: before credentials and any AWS call
        help=f"how long to keep it running: 30m, 2h, 1h30m, 1d (at most {KEEP_MAX_DAYS} days)",
    )
    group.add_argument("--off", action="store_true", help="end the snooze now")
    keep.set_defaults(func=cmd_keep, aws=True)

    agent = sub.add_parser("agent", parents=[common], help="the on-instance agent")
    agent.add_argument("--once", action="store_true", help="sample once, publish, exit")
    agent.add_argument("--json", action="store_true", help="print the ActivityReport as JSON")
    agent.add_argument(
        "--replay",
        metavar="TRACE",
        type=Path,
        help="feed an idle-trace/1 file through the reducer as if its last sample were "
        "taken now, then publish the result",
    )
    agent.add_argument(
        "--instance-id", metavar="ID", help="publish for this instance (default: ask IMDS)"
    )
    agent.set_defaults(func=cmd_agent)

    sim = sub.add_parser(
        "simulate", parents=[common], help="replay traces through the policy in virtual time"
    )
    sim.add_argument("traces", nargs="+", type=Path, metavar="TRACE", help="idle-trace/1 files")
    sim.add_argument("--json", action="store_true", help="one JSON object per trace per line")
    sim.add_argument(
        "--policy",
        default="idle-watchdog",
        choices=["idle-watchdog", "cpu-alarm", "jupyter-only", "gpu-only", "never"],
        help="idle-watchdog (default) or a baseline that stands for a tool in use today",
    )
    sim.set_defaults(func=cmd_simulate)

    demo = sub.add_parser(
        "demo", parents=[common], help="the whole loop on an embedded fake AWS; no account needed"
    )
    demo.set_defaults(func=cmd_demo)

    svc = sub.add_parser(
        "install-service", parents=[common], help="run the scheduler at login (systemd/launchd)"
    )
    svc.set_defaults(func=cmd_install_service)
    unsvc = sub.add_parser("uninstall-service", parents=[common], help="undo install-service")
    unsvc.set_defaults(func=cmd_uninstall_service)

    cfg = sub.add_parser("config", parents=[common], help="config file tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = cfg_sub.add_parser("check", parents=[common], help="validate a config file")
    check.add_argument("path", type=Path)
    check.set_defaults(func=cmd_config_check)
    example = cfg_sub.add_parser(
        "example", parents=[common], help="print an example config: every key, its default"
    )
    example.set_defaults(func=cmd_config_example)
    from watchdog.cloud.cli import add_parser as add_cloud
    from watchdog.launch.commands import add_commands

    add_commands(sub, common)
    add_cloud(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    log.configure()
    try:
        standalone = args.func in (cmd_config_check, cmd_config_example)
        cfg = Config() if standalone else configmod.load(getattr(args, "config", None))
    except ConfigError as exc:
        print(f"idle-watchdog: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if getattr(args, "aws", False):
        problem = _credentials_problem(cfg)
        if problem:
            print(f"idle-watchdog: {problem}", file=sys.stderr)
            return EXIT_FAILED
    code: int = args.func(args, cfg)
    return code


def _credentials_problem(cfg: Config) -> str | None:
    """Why AWS calls cannot even be signed (no credentials, an unknown profile), or None.

    Checked before a command's first call, so the person reads what to do (in the
    launcher's words) instead of a botocore traceback, a JSON log line or a misleading
    "not found". Resolved locally: no API call.
    """
    from watchdog.aws.errors import AwsError
    from watchdog.aws.launching import LauncherAws
    from watchdog.launch.errors import explain

    try:
        LauncherAws.from_profile(cfg.aws.profile).check_credentials()
    except AwsError as exc:
        return explain(exc.code, exc.message)
    return None


def _api(cfg: Config):  # type: ignore[no-untyped-def]  # boto3 imported lazily: fast --help
    from watchdog.aws.ec2 import Boto3Ec2

    return Boto3Ec2.from_config(cfg.aws)  # its profile, timeouts and attempts


#: ``run --once`` while another pass over the same history runs (sysexits' EX_TEMPFAIL).
EXIT_BUSY = 75


def cmd_run(args: argparse.Namespace, cfg: Config) -> int:
    from watchdog.desktop.daemon import Daemon
    from watchdog.desktop.lock import Busy
    from watchdog.desktop.store import Store
    from watchdog.scheduler.history import HistoryUnwritable

    dry = True if args.dry_run else None
    try:
        store = Store(configmod.database_path(cfg))
        daemon = Daemon(
            _api(cfg), store, cfg, dry_run=dry, config_path=getattr(args, "config", None)
        )
        if not args.once:
            asyncio.run(daemon.serve())
            return EXIT_OK
        report = asyncio.run(daemon.once())
    except Busy as exc:
        print(f"idle-watchdog: {exc}. Nothing done; try again when it ends.", file=sys.stderr)
        return EXIT_BUSY
    except HistoryUnwritable as exc:
        print(f"idle-watchdog: {exc}", file=sys.stderr)
        return EXIT_FAILED
    failed = bool(report.failed_regions) or any(not d.ok for d in report.done)
    return EXIT_FAILED if failed else EXIT_OK


def cmd_install_service(args: argparse.Namespace, cfg: Config) -> int:
    from watchdog.desktop import service

    outcome = service.install()
    print("\n".join(outcome.lines))
    return EXIT_OK if outcome.ok else EXIT_FAILED


def cmd_uninstall_service(args: argparse.Namespace, cfg: Config) -> int:
    from watchdog.desktop import service

    outcome = service.uninstall()
    print("\n".join(outcome.lines))
    return EXIT_OK if outcome.ok else EXIT_FAILED


def cmd_status(args: argparse.Namespace, cfg: Config) -> int:
    from watchdog.desktop import ledger, status
    from watchdog.desktop.store import Store
    from watchdog.scheduler.pricebook import PriceBook

    now = utcnow()
    store = Store(configmod.database_path(cfg))
    book = PriceBook(cfg, ledger.aws_prices(cfg), store)
    planned, errors = status.survey(_api(cfg), store, cfg, now, rates=book)
    for item in planned:  # current prices for what runs (the Price List weekly at most)
        if isinstance(item.subject, Instance) and item.subject.state == "running":
            book.refresh(item.subject, now)
    so_far = ledger.per_instance(store, cfg, now)
    data = status.rows(planned, now, cfg, args.family, rates=book, so_far=so_far)
    if args.json:
        print(json.dumps({"now": iso(now), "rows": data, "region_errors": errors}, indent=2))
    else:
        print(status.table(data, now) if data else "no instances in scope")
        for region, error in errors.items():
            print(f"region {region} not scanned: {error}", file=sys.stderr)
    return EXIT_FAILED if errors else EXIT_OK


def cmd_report(args: argparse.Namespace, cfg: Config) -> int:
    from watchdog.core.ledger_report import report_json
    from watchdog.desktop import ledger, report
    from watchdog.desktop.reconcile import reconcile_json, reconcile_text
    from watchdog.desktop.store import Store
    from watchdog.scheduler.history import HistoryUnwritable

    now = utcnow()
    try:
        since, until = report.window(args.since, args.until, now)
    except report.WindowError as exc:
        print(f"idle-watchdog: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        store = Store(configmod.database_path(cfg))
    except HistoryUnwritable as exc:
        print(f"idle-watchdog: {exc}", file=sys.stderr)
        return EXIT_FAILED
    book = ledger.build_ledger(store, cfg, since, until, now)
    if args.html:
        from watchdog.desktop.report_html import render

        page = render(book, ledger.records(store, cfg, since, until), now)
        try:
            args.html.write_text(page, "utf-8")
        except OSError as exc:
            print(f"idle-watchdog: --html {args.html}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_FAILED
    if args.json:
        doc = report_json(book)
        if args.reconcile:  # one Cost Explorer call ($0.01), only with the flag
            doc.update(reconcile_json(book, cfg, now=now))
        print(json.dumps(doc, indent=2))
    else:
        print(report.table(book))
        if args.reconcile:
            print("\n" + reconcile_text(book, cfg, now=now), end="")
        if args.html:
            print(f"\nHTML report: {args.html}")
    return EXIT_OK


def keep_duration(text: str) -> timedelta:
    """``keep --for``'s duration: a unit is required, more than 0, at most ``KEEP_MAX_DAYS``."""
    cleaned = text.strip()
    if cleaned.isascii() and cleaned.isdigit():
        raise ValueError(f"{text!r} has no unit: say 30m, 2h or 1d")
    try:
        duration = parse_duration(cleaned)
    except (ValueError, OverflowError) as exc:
        if str(exc).startswith("too long"):
            duration = timedelta.max
        else:
            raise ValueError(str(exc)) from exc
    if duration <= timedelta(0):
        raise ValueError(f"{text!r} is no time at all: say how long, e.g. 30m, 2h or 1d")
    if duration > timedelta(days=KEEP_MAX_DAYS):
        raise ValueError(f"{text!r} is too long: keep for at most {KEEP_MAX_DAYS} days")
    return duration


def _keep_for(text: str) -> timedelta:
    try:
        return keep_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def cmd_keep(args: argparse.Namespace, cfg: Config) -> int:
    from watchdog.aws.ec2 import AwsError, scan_regions

    duration: timedelta | None = args.duration
    api = _api(cfg)
    found: Instance | None = None
    errors: dict[str, str] = {}
    if args.instance_id is None:  # run on the instance itself
        identity = _identity(None, cfg)
        if identity is None:
            print(
                "idle-watchdog: name an instance (this machine is not an EC2 instance)",
                file=sys.stderr,
            )
            return EXIT_USAGE
        try:
            found = api.describe(identity.region, identity.instance_id)
        except AwsError as exc:
            print(f"idle-watchdog: {exc}", file=sys.stderr)
            return EXIT_FAILED
        args.instance_id = identity.instance_id
    else:
        for scan in scan_regions(api, cfg.aws.regions, cfg.aws.max_workers):
            found = next((i for i in scan.instances if i.id == args.instance_id), found)
            if scan.error:
                errors[scan.region] = scan.error
    if found is None:
        where = [r for r in cfg.aws.regions if r not in errors]
        if where:
            print(
                f"idle-watchdog: {args.instance_id} not found in {', '.join(where)}",
                file=sys.stderr,
            )
        for region, error in errors.items():
            print(f"idle-watchdog: could not look in {region}: {error}", file=sys.stderr)
        return EXIT_FAILED
    try:
        if duration is None:
            api.untag(found.region, found.id, [TAG_KEEP_UNTIL])
            print(f"{found.id}: keep ended; auto-stop applies again")
            return EXIT_OK
        until = utcnow() + duration
        api.tag(found.region, found.id, {TAG_KEEP_UNTIL: iso(until)})
    except AwsError as exc:
        print(f"idle-watchdog: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{found.id}: kept running until {iso(until)}")
    return EXIT_OK


def _identity(instance_id: str | None, cfg: Config) -> Identity | None:
    """Who this agent speaks for: ``--instance-id`` (region from the AWS chain), else IMDS."""
    from watchdog.agent.imds import Identity, Imds, ImdsError

    if instance_id:
        import boto3

        region = boto3.Session(profile_name=cfg.aws.profile or None).region_name
        return Identity(instance_id, region or cfg.aws.regions[0], "on-demand")
    try:
        return Imds().identity()
    except ImdsError as exc:
        print(f"idle-watchdog: not on EC2 ({exc}): nothing to publish to", file=sys.stderr)
        return None


def cmd_agent(args: argparse.Namespace, cfg: Config) -> int:
    import signal
    import threading
    import time

    from watchdog.agent import run
    from watchdog.agent.imds import Imds
    from watchdog.agent.publish import ReportServer, read_token
    from watchdog.core.activity import Thresholds, reduce_all
    from watchdog.sim.trace import TraceError
    from watchdog.sim.trace import load as load_trace

    trace = None
    if args.replay:
        try:  # before IMDS and AWS: a bad file is the first thing to say
            trace = load_trace(args.replay)
        except TraceError as exc:
            print(f"idle-watchdog: {exc}", file=sys.stderr)
            return EXIT_USAGE
    identity = _identity(args.instance_id, cfg)
    if identity is not None and (args.once or trace is not None):
        problem = _credentials_problem(cfg)
        if problem:
            print(f"idle-watchdog: {problem}", file=sys.stderr)
            return EXIT_FAILED
    ec2 = _api(cfg) if identity is not None else None
    if trace is not None:
        start = utcnow() - timedelta(seconds=trace.duration)
        th = Thresholds.from_config(replace(cfg.agent, sample_seconds=trace.sample_seconds))
        who = identity.instance_id if identity else "local"
        if not trace.times:
            print(f"idle-watchdog: {args.replay}: the trace has no samples", file=sys.stderr)
            return EXIT_USAGE
        report = reduce_all(trace.samples(start), th, instance_id=who, started_at=start)[-1]
        agent = run.Agent(
            cfg,
            _NoProbes(),
            identity=identity,
            ec2=ec2,
            state_path=Path(os.devnull),
            started_at=start,
        )
        agent.publish(report, force=True)
    elif args.once:
        sampler = run.Sampler(cfg)
        time.sleep(1.0)  # rates and CPU need an interval
        agent = run.Agent(
            cfg,
            sampler,
            identity=identity,
            ec2=ec2,
            state_path=run.state_path(),
            started_at=run.boot_time(),
        )
        report = agent.observe(sampler.read(utcnow()))
        agent.publish(report, force=True)
    else:
        token = read_token(cfg.agent.token_file) if cfg.agent.http_listen else None
        server = None
        if token:
            try:
                server = ReportServer(cfg.agent.http_listen, token)
            except (OSError, ValueError) as exc:  # the heartbeat and backstop matter more
                print(
                    f"idle-watchdog: HTTP endpoint off: {cfg.agent.http_listen}: {exc}",
                    file=sys.stderr,
                )
        agent = run.Agent(
            cfg,
            run.Sampler(cfg),
            identity=identity,
            ec2=ec2,
            state_path=run.state_path(),
            started_at=run.boot_time(),
            server=server,
            imds=Imds() if identity is not None and args.instance_id is None else None,
        )
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        agent.serve(stop)
        return EXIT_OK
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        reasons = ", ".join(report.reasons) or "no activity"
        print(
            f"{report.instance_id}: {report.state} ({reasons}); "
            f"last active {iso(report.last_active_at)}"
        )
    if agent.heartbeat is None or agent.heartbeat.last is None:  # why: said above
        why = (
            "no instance to publish to (pass --instance-id off EC2)"
            if identity is None
            else "the heartbeat tag was not written (the error is above)"
        )
        print(f"idle-watchdog: report not published: {why}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


class _NoProbes:
    """Stands in for the probes in a replay, where the trace is the input."""

    def read(self, now: datetime) -> Any:  # pragma: no cover - a replay never samples
        raise RuntimeError("a replay reads no probes")


def cmd_simulate(args: argparse.Namespace, cfg: Config) -> int:
    from watchdog.sim.simulate import simulate
    from watchdog.sim.trace import TraceError
    from watchdog.sim.trace import load as load_trace

    results = []
    for path in args.traces:
        try:
            trace = load_trace(path)
        except TraceError as exc:
            print(f"idle-watchdog: {exc}", file=sys.stderr)
            return EXIT_USAGE
        result = simulate(trace, args.policy, cfg)
        results.append(result)
        if args.json:
            print(json.dumps(result.to_json()), flush=True)
    if not args.json:
        print(_simulation_table(results))
    return EXIT_OK


def _simulation_table(results: Sequence[Any]) -> str:
    def clock(seconds: float | None) -> str:
        return "-" if seconds is None else human(timedelta(seconds=seconds))

    rows = [["trace", "policy", "stopped at", "warned at", "false stop", "waste", "waste $"]]
    for r in results:
        labelled = r.false_stop is not None
        rows.append(
            [
                r.trace,
                r.policy,
                clock(r.stopped_at),
                clock(r.warned_at),
                ("YES" if r.false_stop else "no") if labelled else "?",
                clock(r.waste_seconds) if labelled else "?",
                f"{r.waste_usd:.2f}" if labelled else "?",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def cmd_demo(args: argparse.Namespace, cfg: Config) -> int:
    from watchdog.sim import demo

    return demo.main()


def cmd_config_check(args: argparse.Namespace, cfg: Config) -> int:
    try:
        configmod.load(args.path)
    except ConfigError as exc:
        print(f"idle-watchdog: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{args.path}: ok")
    return EXIT_OK


def cmd_config_example(args: argparse.Namespace, cfg: Config) -> int:
    from importlib import resources

    text = (
        resources.files("watchdog")
        .joinpath("deploy")
        .joinpath("config.example.toml")
        .read_text("utf-8")
    )
    print(text, end="")
    return EXIT_OK
