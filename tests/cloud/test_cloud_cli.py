"""``idle-watchdog cloud ...`` as a person types it: templates, the zip, a deploy on moto."""

from __future__ import annotations

import argparse
import json
import zipfile
from pathlib import Path

import boto3
import pytest
import yaml

from tests.cloud.test_template import moto_supported
from watchdog import cli as main_cli
from watchdog import config as configmod
from watchdog.cloud import cli, history, template

TEAM_TOML = """\
[aws]
regions = ["us-east-1", "eu-west-1"]

[scheduler]
poll_seconds = 300

[cloud]
accounts = ["111111111111", "222222222222"]
role_name = "watchdog-member"
external_id = "lab-7f3a"
topic_arn = "arn:aws:sns:us-east-1:123456789012:idle-watchdog"
slack_webhook_parameter = "/idle-watchdog/slack"
"""


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Parse and dispatch as ``watchdog.cli.main`` does once ``cloud`` is registered there."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS)
    parser = argparse.ArgumentParser(prog="idle-watchdog", parents=[common])
    cli.add_parser(parser.add_subparsers(dest="command", required=True), common)
    args = parser.parse_args(argv)
    code = args.func(args, configmod.load(getattr(args, "config", None)))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def team(tmp_path: Path) -> Path:
    path = tmp_path / "team.toml"
    path.write_text(TEAM_TOML, "utf-8")
    return path


def test_config_check_says_a_team_config_is_ok(
    team: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main_cli.main(["config", "check", str(team)]) == 0
    assert capsys.readouterr().out.strip() == f"{team}: ok"


def test_template_prints_the_hub_stack_for_this_config(
    team: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """poll_seconds 300 -> a tick every 5 minutes; the Slack parameter is readable."""
    code, out, _ = run(["cloud", "template", "--config", str(team)], capsys)
    assert code == 0
    printed = json.loads(out)
    assert printed == template.hub(configmod.load(team))
    assert printed["Parameters"]["ScheduleMinutes"]["Default"] == 5
    assert printed["Parameters"]["SlackWebhookParameterName"]["Default"] == "/idle-watchdog/slack"


def test_member_template_prints_yaml_with_the_config_s_role_and_external_id(
    team: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        ["cloud", "member-template", "--format", "yaml", "--config", str(team)], capsys
    )
    assert code == 0
    printed = yaml.safe_load(out)
    assert printed["Parameters"]["RoleName"]["Default"] == "watchdog-member"
    assert printed["Parameters"]["ExternalId"]["Default"] == "lab-7f3a"


def test_package_writes_the_zip_and_names_its_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_zip = tmp_path / "dist" / "idle-watchdog.zip"
    code, out, _ = run(["cloud", "package", str(out_zip)], capsys)
    assert code == 0 and out.startswith(f"{out_zip}: ")
    assert "watchdog/cloud/notify.py" in zipfile.ZipFile(out_zip).namelist()
    assert "sha256 " in out


def test_package_into_an_unwritable_place_is_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run(["cloud", "package", str(blocker / "out.zip")], capsys)
    assert code == 1 and err.startswith("idle-watchdog: cannot write") and "Traceback" not in err


def test_deploy_stores_config_secret_code_and_creates_the_stack(
    aws: str, team: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole command on moto (moto cannot create a function URL, a schedule or an
    alarm, so the hub template is cut to what it can, as in test_template)."""
    real_hub = template.hub
    monkeypatch.setattr(template, "hub", lambda cfg: moto_supported(real_hub(cfg)))
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="code")
    argv = ["cloud", "deploy", "--code-bucket", "code", "--region", "us-east-1"]
    code, out, err = run([*argv, "--config", str(team)], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"config {team} -> ssm:/idle-watchdog/config"
    assert lines[1] == "link secret created: ssm:/idle-watchdog/link-secret (SecureString)"
    assert lines[2].startswith("code s3://code/idle-watchdog/")
    assert "  Add WorkFunction AWS::Lambda::Function" in lines
    assert "idle-watchdog: create complete" in lines
    ssm = boto3.client("ssm", region_name="us-east-1")
    assert ssm.get_parameter(Name="/idle-watchdog/config")["Parameter"]["Value"] == TEAM_TOML

    code, out, _ = run([*argv, "--config", str(team)], capsys)
    assert code == 0
    assert "idle-watchdog: no changes" in out.splitlines()
    assert "link secret created" not in out


def test_deploy_refuses_an_unknown_parameter_before_touching_aws(
    team: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        ["cloud", "deploy", "--code-bucket", "b", "--parameter", "Bogus=1", "--config", str(team)],
        capsys,
    )
    assert code == 2
    assert "unknown template parameter Bogus" in err and "ScheduleMinutes" in err
    code, _, err = run(["cloud", "deploy", "--code-bucket", "b", "--parameter", "oops"], capsys)
    assert code == 2 and "expected KEY=VALUE" in err


def test_status_without_a_stack_is_one_sentence(
    aws: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["cloud", "status", "--region", "us-east-1"], capsys)
    assert code == 1
    assert err.startswith("idle-watchdog: cloud status:") and "Traceback" not in err


def test_status_shows_the_fleet_from_the_table(
    aws: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Reads the table with watchdog.cloud.fleet_status."""
    history.create_table(boto3.client("dynamodb", region_name="us-east-1"), "history")
    code, _, err = run(["cloud", "status", "--table", "history", "--region", "us-east-1"], capsys)
    assert code == 0, err
