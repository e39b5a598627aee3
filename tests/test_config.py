"""Config loading: defaults, a full file, and errors that say where."""

from __future__ import annotations

import dataclasses
import importlib
import sys
from pathlib import Path
from typing import Any

import pytest

from watchdog import config
from watchdog.config import DEFAULT, ENV_VAR, Config, ConfigError, load, parse

EXAMPLE = Path(__file__).resolve().parents[1] / "config.example.toml"

FULL = """\
# every key, none at its default
[aws]
regions = ["us-west-2", "eu-central-1", "us-gov-west-1"]
profile = "gpu"
max_workers = 4

[idle]
minutes = 45
warn_minutes = 5

[scheduler]
poll_seconds = 30
dry_run = true
hibernate = true
agent_silent_minutes = 20
database = "~/watchdog.sqlite3"

[spot]
cancel_orphaned = false
max_open_minutes = 120

[billing.prices]
"g5.xlarge" = 0.9
"eu-central-1/g5.xlarge" = 1.25
"p5.48xlarge" = 55
"""


@pytest.fixture
def no_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No ``$IDLE_WATCHDOG_CONFIG``, and an empty platform config directory."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_when_there_is_no_file(no_config: Path) -> None:
    cfg = load()
    assert cfg == DEFAULT
    assert cfg.aws.regions == ("us-east-1",)
    assert (cfg.idle.minutes, cfg.idle.warn_minutes) == (30, 10)
    assert cfg.scheduler.dry_run is False
    assert cfg.spot.cancel_orphaned is True
    assert dict(cfg.billing.prices) == {}


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load(write(tmp_path, "")) == DEFAULT


def test_full_file(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    cfg = load(path)
    assert cfg.source == str(path)
    assert cfg.aws == config.AwsConfig(("us-west-2", "eu-central-1", "us-gov-west-1"), "gpu", 4)
    assert cfg.idle == config.IdleConfig(45, 5)
    assert cfg.scheduler == config.SchedulerConfig(30, True, True, 20, "~/watchdog.sqlite3")
    assert cfg.spot == config.SpotConfig(False, 120)
    assert dict(cfg.billing.prices) == {
        "g5.xlarge": 0.9,
        "eu-central-1/g5.xlarge": 1.25,
        "p5.48xlarge": 55.0,
    }
    assert config.database_path(cfg) == Path("~/watchdog.sqlite3").expanduser()


def test_loaded_config_is_frozen(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, FULL))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.idle.minutes = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.billing.prices["g5.xlarge"] = 0.0  # type: ignore[index]


def test_partial_file_keeps_other_defaults(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, "[idle]\nminutes = 60\n"))
    assert cfg.idle == config.IdleConfig(60, 10)
    assert cfg.aws == DEFAULT.aws
    assert cfg.scheduler == DEFAULT.scheduler


@pytest.mark.parametrize(
    ("text", "key", "line", "message"),
    [
        ("[idle]\nminutes = 30\n\ncolour = 1\n", "idle.colour", 4, "unknown key"),
        ("# top\ncolour = 1\n", "colour", 2, "unknown key"),
        (
            "[idle]\nminutes = 30\n[scheduler]\npoll_secs = 60\n",
            "scheduler.poll_secs",
            4,
            "unknown key",
        ),
        ("[spot]\n[spot.extra]\nx = 1\n", "spot.extra", 2, "unknown key"),
        ("[notfiy]\nurgent = true\n", "notfiy", 1, "unknown key"),
        ("[notify]\nurgent = true\n", "notify.urgent", 2, "unknown key"),
        ('[notify]\nbackend = "growl"\n', "notify.backend", 2, "expected one of auto"),
        ('[notify]\nkeep_durations = ["soon"]\n', "notify.keep_durations", 2, "not a duration"),
        ('[idle]\nminutes = "30"\n', "idle.minutes", 2, "expected a whole number"),
        ("[idle]\nminutes = 30.5\n", "idle.minutes", 2, "expected a whole number"),
        (
            "\n[scheduler]\npoll_seconds = true\n",
            "scheduler.poll_seconds",
            3,
            "expected a whole number",
        ),
        (
            "[scheduler]\npoll_seconds = 60\ndry_run = 1\n",
            "scheduler.dry_run",
            3,
            "expected true or false",
        ),
        ('[spot]\ncancel_orphaned = "yes"\n', "spot.cancel_orphaned", 2, "expected true or false"),
        ('[aws]\nregions = "us-east-1"\n', "aws.regions", 2, "expected a list"),
        ("[aws]\nregions = []\n", "aws.regions", 2, "must not be empty"),
        ("[aws]\nprofile = 3\n", "aws.profile", 2, "expected a string"),
        ("idle = 5\n", "idle", 1, "expected a table"),
        (
            "\nscheduler = { poll_seconds = true }\n",
            "scheduler.poll_seconds",
            2,
            "expected a whole number",
        ),
        ("[idle]\nminutes = 0\n", "idle.minutes", 2, "must be at least 1"),
        ("idle.minutes = 0\n", "idle.minutes", 1, "must be at least 1"),
        ("[idle]\nminutes = -5\n", "idle.minutes", 2, "must be at least 1"),
        ("[idle]\nminutes = 99999\n", "idle.minutes", 2, "must be at most"),
        ("[scheduler]\npoll_seconds = 1\n", "scheduler.poll_seconds", 2, "must be at least 10"),
        ("[idle]\nminutes = 20\nwarn_minutes = 25\n", "idle.warn_minutes", 3, "exceeds"),
        ("[idle]\nwarn_minutes = 31\n", "idle.warn_minutes", 2, "exceeds"),
        ('[aws]\nregions = ["us-east-1", "US East"]\n', "aws.regions", 2, "not an AWS region name"),
        (
            '[aws]\nregions = [\n  "us-east-1",\n  "useast1",\n]\n',
            "aws.regions",
            2,
            "not an AWS region name",
        ),
        (
            '[billing.prices]\n"g5.xlarge" = 1.0\n"Big GPU" = 2.0\n',
            "billing.prices.Big GPU",
            3,
            "instance type",
        ),
        ('[billing]\nprices = { "g5" = 1.0 }\n', "billing.prices.g5", 2, "instance type"),
        (
            '[billing.prices]\n"g5.xlarge" = -1.0\n',
            "billing.prices.g5.xlarge",
            2,
            "must be at least 0",
        ),
        (
            '[billing.prices]\n"g5.xlarge" = "cheap"\n',
            "billing.prices.g5.xlarge",
            2,
            "expected a number",
        ),
        (
            '[billing.prices]\n"g5.xlarge" = nan\n',
            "billing.prices.g5.xlarge",
            2,
            "expected a finite number, got nan",
        ),
        ('[cloud]\naccounts = ["12345"]\n', "cloud.accounts", 2, "12-digit AWS account id"),
        (
            '[cloud]\naccounts = ["organization", "123456789012"]\n',
            "cloud.accounts",
            2,
            "use it alone",
        ),
        ('[cloud]\ntopic_arn = "alerts"\n', "cloud.topic_arn", 2, "SNS topic ARN"),
        (
            '[cloud]\nslack_webhook_parameter = "a b"\n',
            "cloud.slack_webhook_parameter",
            2,
            "not an SSM parameter name",
        ),
    ],
)
def test_errors_name_path_line_and_key(
    tmp_path: Path, text: str, key: str, line: int, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path)
    error = caught.value
    assert (error.source, error.key, error.line) == (str(path), key, line)
    assert str(error).startswith(f"{path}:{line}: {key}: ")
    assert message in str(error)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("[idle]\nminutes = \n", 2),
        ("[aws]\nregions = ['us-east-1'\n\n[idle]\nminutes = 3\n", 4),
        ("[idle]\nminutes = 30\n[idle]\nwarn_minutes = 5\n", 3),
        ("[idle\nminutes = 30\n", 1),
    ],
)
def test_toml_syntax_error_gives_a_line(tmp_path: Path, text: str, line: int) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert caught.value.line == line
    assert str(caught.value).startswith(f"{path}:{line}: not valid TOML")


def _float_keys() -> list[str]:
    """Every float key of the schema, as ``section.key``."""
    return [
        f"{section.name}.{f.name}"
        for section in dataclasses.fields(Config)
        if section.name != "source"
        for f in dataclasses.fields(type(getattr(DEFAULT, section.name)))
        if f.type in (float, "float")
    ]


def test_the_schema_has_float_keys_to_check() -> None:
    assert "notify.long_running_hours" in _float_keys() and len(_float_keys()) >= 5


@pytest.mark.parametrize("value", ["nan", "+nan", "-nan", "inf", "+inf", "-inf"])
@pytest.mark.parametrize("key", _float_keys())
def test_nan_and_infinities_are_rejected_for_every_float_key(
    tmp_path: Path, key: str, value: str
) -> None:
    section, name = key.split(".")
    path = write(tmp_path, f"# a comment\n[{section}]\n{name} = {value}\n")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value).startswith(f"{path}:3: {key}: expected a finite number, got ")


def test_a_file_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes("[idle]\nminutes = 30\n# caf\u00e9 au lait\n".encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value).startswith(f"{path}:3: not UTF-8 text (byte 0xe9")


def test_a_missing_named_file_says_so_and_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path / "nope.toml")
    assert str(caught.value).startswith(f"{tmp_path / 'nope.toml'}: no such file: create it")
    assert "idle-watchdog config example" in str(caught.value)


def test_unreadable_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        load(missing)


def test_environment_variable_is_honoured(no_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(no_config, "[idle]\nminutes = 90\nwarn_minutes = 15\n", "elsewhere/wd.toml")
    monkeypatch.setenv(ENV_VAR, str(path))
    cfg = load()
    assert cfg.idle == config.IdleConfig(90, 15)
    assert cfg.source == str(path)


def test_environment_variable_beats_platform_file(
    no_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(no_config, "[idle]\nminutes = 40\n", "xdg/idle-watchdog/config.toml")
    assert load().idle.minutes == 40  # the platform file is found...
    path = write(no_config, "[idle]\nminutes = 50\n", "env.toml")
    monkeypatch.setenv(ENV_VAR, str(path))
    assert load().idle.minutes == 50  # ...but the variable wins
    explicit = write(no_config, "[idle]\nminutes = 60\n", "explicit.toml")
    assert load(explicit).idle.minutes == 60  # and an explicit path beats both


def test_environment_variable_naming_a_missing_file_is_an_error(
    no_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, str(no_config / "missing.toml"))
    with pytest.raises(ConfigError, match=r"missing\.toml: no such file \(named by \$IDLE_WATCH"):
        load()


def test_environment_variable_errors_name_that_file(
    no_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(no_config, "[idle]\nminutes = 0\n", "bad.toml")
    monkeypatch.setenv(ENV_VAR, str(path))
    with pytest.raises(ConfigError) as caught:
        load()
    assert str(caught.value).startswith(f"{path}:2: idle.minutes: ")


# --- config.example.toml documents every key with its default -----------------------------


def _sections() -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(Config) if f.name != "source"]


def test_example_loads_to_the_defaults() -> None:
    assert EXAMPLE.exists(), f"{EXAMPLE.name} is missing"
    assert load(EXAMPLE) == DEFAULT


def test_example_documents_every_key() -> None:
    assert EXAMPLE.exists(), f"{EXAMPLE.name} is missing"
    toml = importlib.import_module("tomllib" if sys.version_info >= (3, 11) else "tomli")
    raw: dict[str, Any] = toml.loads(EXAMPLE.read_text(encoding="utf-8"))
    missing = []
    for section in _sections():
        table = raw.get(section.name, {})
        cls = type(getattr(DEFAULT, section.name))
        missing += [
            f"{section.name}.{f.name}" for f in dataclasses.fields(cls) if f.name not in table
        ]
    assert missing == []


@pytest.mark.parametrize("value", ['"127.0.0.1"', '"[::1]"', '"localhost:99999"', '":80"'])
def test_http_listen_must_be_host_and_port(value: str) -> None:
    with pytest.raises(ConfigError, match=r"agent\.http_listen: expected \"host:port\""):
        parse(f"[agent]\nhttp_listen = {value}\n")


def test_a_team_config_with_accounts_topic_and_slack_loads(tmp_path: Path) -> None:
    cfg = load(
        write(
            tmp_path,
            '[cloud]\naccounts = ["123456789012", "210987654321"]\n'
            'topic_arn = "arn:aws:sns:us-east-1:123456789012:idle-watchdog"\n'
            'slack_webhook_parameter = "/idle-watchdog/slack"\n',
        )
    )
    assert cfg.cloud.accounts == ("123456789012", "210987654321")
    assert cfg.cloud.topic_arn.endswith(":idle-watchdog")
    assert cfg.cloud.role_name == "idle-watchdog-member"
