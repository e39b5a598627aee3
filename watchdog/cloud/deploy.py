"""``cloud deploy``: upload the code, store the config, and create or update the hub stack.

Always through a change set: it is created, waited for, each change printed
("Add/Modify/Remove <logical id> <type>"), then executed and waited for. A
template that changes nothing says so and leaves the stack alone. Failures
come back as ``DeployError`` with AWS's own reason (the failed resources'
events), never a traceback.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

from watchdog.cloud.package import Package

if TYPE_CHECKING:
    import boto3
    from mypy_boto3_cloudformation.type_defs import ParameterTypeDef, WaiterConfigTypeDef

Say = Callable[[str], None]

#: SSM's standard tier holds 4 KB; a longer config needs the advanced tier.
STANDARD_TIER_BYTES = 4096
CAPABILITIES: list[Literal["CAPABILITY_IAM"]] = ["CAPABILITY_IAM"]
_NO_CHANGES = ("didn't contain changes", "No updates are to be performed")


class DeployError(Exception):
    """The deployment stopped; ``str()`` says why, in AWS's words where it gave any."""


@dataclass(frozen=True)
class Change:
    action: str  # Add | Modify | Remove | Import | Dynamic
    logical_id: str
    resource_type: str
    replacement: str = ""  # "True" when CloudFormation replaces the resource

    def __str__(self) -> str:
        line = f"{self.action} {self.logical_id} {self.resource_type}"
        return f"{line} (replaced)" if self.replacement == "True" else line


def changes(described: Mapping[str, Any]) -> list[Change]:
    """The resource changes of a ``DescribeChangeSet`` answer."""
    out = []
    for item in described.get("Changes", []):
        change = item.get("ResourceChange", {})
        out.append(
            Change(
                str(change.get("Action", "?")),
                str(change.get("LogicalResourceId", "?")),
                str(change.get("ResourceType", "?")),
                str(change.get("Replacement", "")),
            )
        )
    return out


def _error(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        err = response.get("Error", {})
        return f"{err.get('Code', type(exc).__name__)}: {err.get('Message', exc)}"
    return f"{type(exc).__name__}: {exc}"


class Deployer:
    """Creates or updates one stack with boto3; prints what it changes."""

    def __init__(
        self, session: boto3.Session, *, say: Say = print, delay: int = 5, attempts: int = 360
    ) -> None:
        self.session = session
        self.cfn = session.client("cloudformation")
        self.say = say
        self.waiter_config: WaiterConfigTypeDef = {"Delay": delay, "MaxAttempts": attempts}

    def _existing(self, stack: str) -> tuple[str | None, set[str]]:
        """The stack's status and parameter names; (None, empty) when there is no such stack."""
        try:
            found = self.cfn.describe_stacks(StackName=stack)["Stacks"]
        except Exception as exc:
            if "does not exist" in str(exc):
                return None, set()
            raise DeployError(f"cannot read stack {stack}: {_error(exc)}") from exc
        if not found:
            return None, set()
        names = {str(p["ParameterKey"]) for p in found[0].get("Parameters", [])}
        return str(found[0]["StackStatus"]), names

    def stack(
        self,
        stack: str,
        template_body: str,
        parameters: Mapping[str, str],
        *,
        keep_previous: Collection[str] = (),
    ) -> dict[str, str]:
        """Create or update ``stack``; returns its outputs. Raises ``DeployError``.

        On an update, a parameter named in ``keep_previous`` and not given keeps
        the value the stack has (an alarm e-mail is not dropped by a redeploy).
        """
        status, previous = self._existing(stack)
        if status == "ROLLBACK_COMPLETE":
            raise DeployError(
                f"stack {stack} failed to create and was rolled back; delete it "
                f"(aws cloudformation delete-stack --stack-name {stack}) and deploy again"
            )
        kind: Literal["CREATE", "UPDATE"] = (
            "CREATE" if status in (None, "REVIEW_IN_PROGRESS") else "UPDATE"
        )
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S")
        name = f"idle-watchdog-{stamp}-{secrets.token_hex(3)}"
        given: list[ParameterTypeDef] = [
            {"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()
        ]
        given += [
            {"ParameterKey": k, "UsePreviousValue": True}
            for k in sorted(keep_previous)
            if kind == "UPDATE" and k in previous and k not in parameters
        ]
        try:
            self.cfn.create_change_set(
                StackName=stack,
                ChangeSetName=name,
                ChangeSetType=kind,
                TemplateBody=template_body,
                Parameters=given,
                Capabilities=CAPABILITIES,
            )
        except Exception as exc:
            raise DeployError(f"change set refused: {_error(exc)}") from exc
        described = self._wait_for_change_set(stack, name)
        found = changes(described) if described is not None else []
        if not found:  # AWS fails an empty change set; moto may make one with no change
            if described is not None:
                self.cfn.delete_change_set(StackName=stack, ChangeSetName=name)
            self.say(f"{stack}: no changes")
            return self.outputs(stack)
        self.say(f"{stack}: {len(found)} change{'s' * (len(found) != 1)} ({kind.lower()})")
        for change in found:
            self.say(f"  {change}")
        try:
            self.cfn.execute_change_set(StackName=stack, ChangeSetName=name)
            if kind == "CREATE":
                self.cfn.get_waiter("stack_create_complete").wait(
                    StackName=stack, WaiterConfig=self.waiter_config
                )
            else:
                self.cfn.get_waiter("stack_update_complete").wait(
                    StackName=stack, WaiterConfig=self.waiter_config
                )
        except Exception as exc:
            raise DeployError(f"{stack}: {kind.lower()} failed: {self._why(stack, exc)}") from exc
        self.say(f"{stack}: {kind.lower()} complete")
        return self.outputs(stack)

    def _wait_for_change_set(self, stack: str, name: str) -> Mapping[str, Any] | None:
        """The described change set, or None when it holds no change (then it is deleted)."""
        try:
            self.cfn.get_waiter("change_set_create_complete").wait(
                StackName=stack,
                ChangeSetName=name,
                WaiterConfig=self.waiter_config,
            )
        except Exception as exc:
            described = self._describe(stack, name)
            reason = str(described.get("StatusReason", "")) if described else ""
            if any(text in reason for text in _NO_CHANGES):
                self.cfn.delete_change_set(StackName=stack, ChangeSetName=name)
                return None
            raise DeployError(f"change set failed: {reason or _error(exc)}") from exc
        return self._describe(stack, name)

    def _describe(self, stack: str, name: str) -> Mapping[str, Any]:
        pages = self.cfn.get_paginator("describe_change_set").paginate(
            StackName=stack, ChangeSetName=name
        )
        merged: dict[str, Any] = {}
        for page in pages:
            merged.update({k: v for k, v in page.items() if k != "Changes"})
            merged.setdefault("Changes", []).extend(page.get("Changes", []))
        return merged

    def _why(self, stack: str, exc: Exception) -> str:
        """The failed resources' reasons from the stack's events, else the error itself."""
        try:
            events = self.cfn.describe_stack_events(StackName=stack)["StackEvents"]
        except Exception:
            return _error(exc)
        reasons = [
            f"{e.get('LogicalResourceId')}: {e.get('ResourceStatusReason')}"
            for e in events
            if str(e.get("ResourceStatus", "")).endswith("_FAILED")
            and e.get("ResourceStatusReason")
        ]
        return "; ".join(reasons[:5]) or _error(exc)

    def outputs(self, stack: str) -> dict[str, str]:
        found = self.cfn.describe_stacks(StackName=stack)["Stacks"]
        return {
            str(o["OutputKey"]): str(o["OutputValue"])
            for o in (found[0].get("Outputs", []) if found else [])
        }


def upload(
    session: boto3.Session, bucket: str, built: Package, prefix: str = "idle-watchdog"
) -> str:
    """Put the zip at a key named by its SHA-256 (skipped when already there); returns the key."""
    key = f"{prefix}/{built.sha256[:16]}.zip"
    s3 = session.client("s3")
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return key
    except Exception as exc:
        if "404" not in str(exc) and "Not Found" not in str(exc):
            raise DeployError(f"cannot read s3://{bucket}/{key}: {_error(exc)}") from exc
    try:
        s3.upload_file(str(built.path), bucket, key)
    except Exception as exc:
        raise DeployError(f"cannot upload to s3://{bucket}/{key}: {_error(exc)}") from exc
    return key


def put_config(session: boto3.Session, name: str, text: str) -> None:
    """Store the TOML config where the functions read it (a String parameter)."""
    tier: Literal["Standard", "Advanced"] = (
        "Standard" if len(text.encode()) <= STANDARD_TIER_BYTES else "Advanced"
    )
    try:
        session.client("ssm").put_parameter(
            Name=name, Value=text, Type="String", Tier=tier, Overwrite=True
        )
    except Exception as exc:
        raise DeployError(f"cannot store the config in {name}: {_error(exc)}") from exc


def ensure_secret(session: boto3.Session, name: str) -> bool:
    """Create the links' HMAC secret (a random SecureString) unless it exists; True if made."""
    ssm = session.client("ssm")
    try:
        ssm.get_parameter(Name=name)
        return False
    except Exception as exc:
        if "ParameterNotFound" not in str(exc):
            raise DeployError(f"cannot read {name}: {_error(exc)}") from exc
    try:
        ssm.put_parameter(
            Name=name, Value=secrets.token_urlsafe(32), Type="SecureString", Overwrite=False
        )
    except Exception as exc:
        raise DeployError(f"cannot create the link secret {name}: {_error(exc)}") from exc
    return True
