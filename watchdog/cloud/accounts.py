"""Which accounts the hub watches, and a boto3 session in each.

``[cloud] accounts`` lists ids, or ``["organization"]`` to list the active
accounts of the organization (Organizations ListAccounts, from the management
or a delegated administrator account); empty means the hub's own account. A
member account is entered by assuming ``[cloud] role_name`` with the external
id; the hub's own account uses the function's own credentials.
"""

from __future__ import annotations

from typing import Any

import boto3

from watchdog.core.settings import CloudConfig

ORGANIZATION = "organization"
SESSION_NAME = "idle-watchdog"


class AccountError(Exception):
    """An account could not be listed or entered; ``str()`` names it and why."""


def hub_identity(session: boto3.Session) -> tuple[str, str]:
    """(account id, partition) of the credentials the function runs with."""
    answer = session.client("sts").get_caller_identity()
    return answer["Account"], answer["Arn"].split(":")[1]


def accounts(cloud: CloudConfig, session: boto3.Session, hub: str) -> list[str]:
    """The accounts of one tick, in a stable order, without duplicates."""
    if not cloud.accounts:
        return [hub]
    if tuple(cloud.accounts) == (ORGANIZATION,):
        return organization_accounts(session.client("organizations"))
    return list(dict.fromkeys(cloud.accounts))


def organization_accounts(client: Any) -> list[str]:
    """Every ACTIVE account of the organization (suspended and leaving ones are skipped)."""
    found: list[str] = []
    try:
        for page in client.get_paginator("list_accounts").paginate():
            for account in page.get("Accounts", []):
                state = account.get("State") or account.get("Status")
                if state == "ACTIVE":
                    found.append(account["Id"])
    except Exception as exc:  # botocore's errors: say what to do
        raise AccountError(
            f"cannot list the organization's accounts ({exc}); the hub must be the "
            "management account or a delegated administrator, or list [cloud] accounts by id"
        ) from exc
    return sorted(found)


def role_arn(account: str, cloud: CloudConfig, partition: str = "aws") -> str:
    return f"arn:{partition}:iam::{account}:role/{cloud.role_name}"


def session_for(
    account: str, cloud: CloudConfig, session: boto3.Session, *, hub: str, partition: str = "aws"
) -> boto3.Session:
    """A session in ``account``: the hub's own, or the member role assumed with the external id."""
    if account == hub:
        return session
    kw: dict[str, Any] = {
        "RoleArn": role_arn(account, cloud, partition),
        "RoleSessionName": SESSION_NAME,
        "DurationSeconds": 900,  # the shortest STS allows; a worker needs minutes
    }
    if cloud.external_id:
        kw["ExternalId"] = cloud.external_id
    try:
        creds = session.client("sts").assume_role(**kw)["Credentials"]
    except Exception as exc:  # botocore's errors, named with the role in the message
        raise AccountError(f"cannot assume {kw['RoleArn']}: {exc}") from exc
    return boto3.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name=session.region_name,
    )
