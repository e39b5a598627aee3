"""``idle-watchdog cloud ...``: the templates, the zip, the deployment and the fleet's status.

``add_parser(subparsers, common)`` registers ``cloud`` on the main parser;
each handler takes ``(args, cfg)`` and returns the exit status, like the
other commands. Nothing here decides anything: it wires the modules.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from pathlib import Path
from typing import Any

from watchdog.cloud import template
from watchdog.core.settings import Config

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
STACK_NAME = "idle-watchdog"
CONFIG_PARAMETER = "/idle-watchdog/config"
#: Stored when no config file is in use: a TOML comment, read as the defaults.
DEFAULT_CONFIG_TEXT = "# idle-watchdog: the built-in defaults (no config file was deployed)\n"


def add_parser(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    """Register ``cloud`` and its actions."""
    cloud = subparsers.add_parser(
        "cloud",
        parents=[common],
        help="the team scheduler on AWS (Lambda, SQS, DynamoDB, SNS/Slack)",
        description="Deploy and watch the team scheduler: the same pass as `run`, on Lambda, "
        "across accounts, telling each instance's owner by SNS (e-mail) and Slack.",
    )
    sub = cloud.add_subparsers(dest="cloud_command", required=True, metavar="ACTION")
    for name, func, what in (
        ("template", cmd_template, "print the hub stack's CloudFormation template"),
        ("member-template", cmd_member_template, "print the member-account role (for a StackSet)"),
    ):
        parser = sub.add_parser(name, parents=[common], help=what)
        parser.add_argument("--format", choices=["json", "yaml"], default="json")
        parser.set_defaults(func=func)

    package = sub.add_parser("package", parents=[common], help="build the Lambda deployment zip")
    package.add_argument("out", type=Path, metavar="OUT.zip")
    package.set_defaults(func=cmd_package)

    deploy = sub.add_parser(
        "deploy",
        parents=[common],
        help="create or update the hub stack and print what changed",
        description="Builds the zip and uploads it to --code-bucket, stores the config file in "
        "SSM (and a link secret if there is none), then creates or updates the stack through a "
        "change set, printing each change.",
    )
    deploy.add_argument(
        "--code-bucket", required=True, metavar="BUCKET", help="S3 bucket for the zip"
    )
    deploy.add_argument("--stack-name", default=STACK_NAME, metavar="NAME")
    deploy.add_argument(
        "--region",
        help="the hub's region (default: the profile's, else the first of [aws] regions)",
    )
    deploy.add_argument(
        "--alarm-email", default="", metavar="ADDRESS", help="told when a pass keeps failing"
    )
    deploy.add_argument(
        "--parameter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other template parameter (repeatable), e.g. ScheduleMinutes=5",
    )
    deploy.set_defaults(func=cmd_deploy, aws=True)

    status = sub.add_parser(
        "status", parents=[common], help="the fleet as the cloud scheduler sees it"
    )
    status.add_argument("--stack-name", default=STACK_NAME, metavar="NAME")
    status.add_argument(
        "--table", metavar="NAME", help="the table (default: the stack's TableName output)"
    )
    status.add_argument("--region", help="the hub's region")
    status.set_defaults(func=cmd_status, aws=True)


def cmd_template(args: argparse.Namespace, cfg: Config) -> int:
    return _print(template.hub(cfg), args.format)


def cmd_member_template(args: argparse.Namespace, cfg: Config) -> int:
    return _print(template.member(cfg), args.format)


def _print(data: template.Json, fmt: str) -> int:
    try:
        text = template.render(data, fmt)
    except ImportError:
        print("idle-watchdog: --format yaml needs PyYAML (pip install pyyaml)", file=sys.stderr)
        return EXIT_USAGE
    print(text, end="")
    return EXIT_OK


def cmd_package(args: argparse.Namespace, cfg: Config) -> int:
    from watchdog.cloud.package import build

    try:
        built = build(args.out)
    except OSError as exc:
        print(f"idle-watchdog: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{built.path}: {built.files} files, {built.size / 1e6:.1f} MB, sha256 {built.sha256}")
    return EXIT_OK


def _session(cfg: Config, region: str | None) -> Any:
    import boto3

    session = boto3.Session(profile_name=cfg.aws.profile or None)
    return boto3.Session(
        profile_name=cfg.aws.profile or None,
        region_name=region or session.region_name or cfg.aws.regions[0],
    )


def _parameters(args: argparse.Namespace) -> dict[str, str] | str:
    """``--parameter`` pairs, or the message for the first malformed one."""
    out = {"AlarmEmail": args.alarm_email} if args.alarm_email else {}
    for pair in args.parameter:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            return f"--parameter {pair!r}: expected KEY=VALUE, e.g. ScheduleMinutes=5"
        out[key] = value
    return out


def cmd_deploy(args: argparse.Namespace, cfg: Config) -> int:
    from watchdog.cloud import deploy
    from watchdog.cloud.package import build

    overrides = _parameters(args)
    if isinstance(overrides, str):
        print(f"idle-watchdog: {overrides}", file=sys.stderr)
        return EXIT_USAGE
    hub = template.hub(cfg)
    unknown = sorted(set(overrides) - set(hub["Parameters"]))
    if unknown:
        print(
            f"idle-watchdog: unknown template parameter {', '.join(unknown)}; "
            f"known: {', '.join(hub['Parameters'])}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    session = _session(cfg, args.region)
    config_name = overrides.get("ConfigParameterName", CONFIG_PARAMETER)
    secret_name = overrides.get("LinkSecretParameterName", cfg.cloud.link_secret_parameter)
    try:
        text = Path(cfg.source).read_text("utf-8") if cfg.source else DEFAULT_CONFIG_TEXT
        deploy.put_config(session, config_name, text)
        print(f"config {cfg.source or '(defaults)'} -> ssm:{config_name}")
        if deploy.ensure_secret(session, secret_name):
            print(f"link secret created: ssm:{secret_name} (SecureString)")
        with tempfile.TemporaryDirectory() as tmp:
            built = build(Path(tmp) / "idle-watchdog.zip")
            key = deploy.upload(session, args.code_bucket, built)
        print(f"code s3://{args.code_bucket}/{key} ({built.size / 1e6:.1f} MB)")
        outputs = deploy.Deployer(session).stack(
            args.stack_name,
            template.render(hub),
            {**overrides, "CodeBucket": args.code_bucket, "CodeKey": key},
            keep_previous=("AlarmEmail",),
        )
    except (deploy.DeployError, OSError) as exc:
        print(f"idle-watchdog: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for name, value in sorted(outputs.items()):
        print(f"  {name} = {value}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace, cfg: Config) -> int:
    from watchdog.core.timeutil import utcnow

    session = _session(cfg, args.region)
    table = args.table
    try:
        if not table:
            from watchdog.cloud.deploy import Deployer

            table = Deployer(session).outputs(args.stack_name).get("TableName", "")
        if not table:
            print(
                f"idle-watchdog: stack {args.stack_name} has no TableName output", file=sys.stderr
            )
            return EXIT_FAILED
        fleet_status: Any = importlib.import_module("watchdog.cloud.fleet_status")
        print(fleet_status.render(session.client("dynamodb"), table, now=utcnow()), end="")
    except Exception as exc:  # botocore's errors, a missing stack: one sentence, no traceback
        print(f"idle-watchdog: cloud status: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
