"""Signed links: exactly what was signed, by our secret, before the announced stop."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qsl, urlparse

import pytest

from watchdog.cloud.links import LinkRefused, SignedLinks, verify
from watchdog.scheduler.notifier import Button, Message

T0 = datetime(2026, 11, 30, 17, 0, tzinfo=timezone.utc)
STOP = T0 + timedelta(minutes=10)
SECRET = b"0123456789abcdef0123456789abcdef"
IID = "i-0123456789abcdef0"
WARNING = Message(
    f"warn:{IID}",
    "gpu-box stops in 10m",
    "Idle since 16:30",
    (Button("Keep 1h", "keep:1h"), Button("Stop now", "stop")),
    target=IID,
    region="us-east-1",
    extra={"hibernate": "0", "stop_at": "2026-11-30T17:10:00Z"},
)


def params(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlparse(url).query))


def links() -> dict[str, str]:
    return dict(
        SignedLinks("https://x.lambda-url.us-east-1.on.aws", SECRET, "111111111111").for_message(
            WARNING
        )
    )


def test_each_button_gets_a_link_that_verifies_to_its_action() -> None:
    found = links()
    assert set(found) == {"Keep 1h", "Stop now"}
    keep = verify(params(found["Keep 1h"]), SECRET, T0)
    assert (keep.account, keep.region, keep.instance, keep.keep_for) == (
        "111111111111",
        "us-east-1",
        IID,
        "1h",
    )
    assert keep.expires == int(STOP.timestamp())
    assert verify(params(found["Stop now"]), SECRET, T0).action == "stop"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("i", "i-0fedcba9876543210"),  # another instance
        ("a", "222222222222"),  # another account
        ("r", "eu-west-1"),
        ("do", "keep:4d"),  # a longer keep
        ("exp", str(int((STOP + timedelta(days=1)).timestamp()))),  # a later expiry
        ("sig", "AAAA"),
    ],
)
def test_a_changed_link_is_refused(field: str, value: str) -> None:
    changed = {**params(links()["Keep 1h"]), field: value}
    with pytest.raises(LinkRefused, match="not signed by idle-watchdog, or was changed"):
        verify(changed, SECRET, T0)


def test_a_link_signed_with_another_secret_or_incomplete_is_refused() -> None:
    with pytest.raises(LinkRefused, match="changed"):
        verify(params(links()["Stop now"]), b"another secret", T0)
    incomplete = params(links()["Stop now"])
    del incomplete["sig"]
    with pytest.raises(LinkRefused, match="incomplete"):
        verify(incomplete, SECRET, T0)
    with pytest.raises(LinkRefused, match="incomplete"):
        verify({**params(links()["Stop now"]), "exp": "soon"}, SECRET, T0)


def test_a_link_expires_at_the_stop_it_announced() -> None:
    url = links()["Keep 1h"]
    assert verify(params(url), SECRET, STOP - timedelta(seconds=1))
    with pytest.raises(LinkRefused, match="expired"):
        verify(params(url), SECRET, STOP)


def test_only_a_warning_with_its_stop_time_gets_links() -> None:
    signer = SignedLinks("https://x", SECRET, "111111111111")
    assert (
        signer.for_message(Message("stopped:i-1", "stopped", "", target="i-1", region="us-east-1"))
        == {}
    )
    older = Message(
        WARNING.key, WARNING.title, WARNING.body, WARNING.buttons, target=IID, region="us-east-1"
    )
    assert signer.for_message(older) == {}  # queued before warnings carried their stop time
