"""Which accounts a tick covers, and entering a member account with the external id."""

from __future__ import annotations

import boto3
import pytest

from tests.cloud import world
from watchdog.cloud import accounts as acc
from watchdog.core.settings import CloudConfig

pytestmark = pytest.mark.usefixtures("aws")


def test_no_accounts_means_the_hub_alone_and_a_list_is_kept_in_order_without_repeats() -> None:
    hub = world.hub()
    assert acc.accounts(CloudConfig(), hub, world.HUB) == [world.HUB]
    listed = CloudConfig(accounts=(world.MEMBER, world.HUB, world.MEMBER))
    assert acc.accounts(listed, hub, world.HUB) == [world.MEMBER, world.HUB]


def test_organization_lists_the_active_accounts_only() -> None:
    org = world.hub().client("organizations")
    org.create_organization(FeatureSet="ALL")
    made = [
        org.create_account(AccountName=name, Email=f"{name}@example.com")["CreateAccountStatus"][
            "AccountId"
        ]
        for name in ("lab", "closing")
    ]
    org.close_account(AccountId=made[1])
    found = acc.accounts(CloudConfig(accounts=("organization",)), world.hub(), world.HUB)
    assert made[0] in found and world.HUB in found
    assert made[1] not in found


def test_a_member_is_entered_with_the_external_id_and_the_hub_is_not_assumed() -> None:
    hub = world.hub()
    cloud = CloudConfig(role_name="idle-watchdog-member", external_id=world.EXTERNAL_ID)
    assert acc.session_for(world.HUB, cloud, hub, hub=world.HUB) is hub
    member = acc.session_for(world.MEMBER, cloud, hub, hub=world.HUB)
    assert member.client("sts").get_caller_identity()["Account"] == world.MEMBER
    assert world.external_ids(world.MEMBER) == [world.EXTERNAL_ID]


def test_a_role_that_cannot_be_assumed_names_the_role(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # STS unreachable
    cloud = CloudConfig(role_name="idle-watchdog-member")
    quick = boto3.Session(region_name="us-east-1")
    with pytest.raises(
        acc.AccountError, match="arn:aws:iam::222222222222:role/idle-watchdog-member"
    ):
        acc.session_for(world.MEMBER, cloud, quick, hub=world.HUB)


def test_organizations_that_cannot_be_listed_says_what_to_do_instead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """moto lists accounts even outside an organization; an unreachable endpoint stands in
    for AccessDenied (a hub that is not the management account)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    session = boto3.Session(region_name="us-east-1")
    with pytest.raises(acc.AccountError, match="list \\[cloud\\] accounts by id"):
        acc.accounts(CloudConfig(accounts=("organization",)), session, world.HUB)
