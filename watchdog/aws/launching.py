"""The launcher's AWS edge: each EC2, IAM and SSM call it makes, once, behind typed methods.

The launcher (watchdog.launch) decides; this module only calls. Every botocore
failure leaves here as an ``AwsError`` carrying AWS's error code (or botocore's
exception name, such as ``NoCredentialsError``), so the launcher words it
without knowing botocore. ``OPERATIONS`` lists every call made below;
deploy/iam/launcher-policy.json must allow each (tests/launch checks both).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from watchdog.aws.errors import AwsError

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_ssm import SSMClient

#: Every AWS operation this module sends, as IAM names it (service:Action).
OPERATIONS = frozenset(
    {
        "ec2:DescribeInstances",
        "ec2:DescribeInstanceTypes",
        "ec2:DescribeInstanceTypeOfferings",
        "ec2:DescribeVpcs",
        "ec2:DescribeSubnets",
        "ec2:DescribeImages",
        "ec2:DescribeKeyPairs",
        "ec2:CreateKeyPair",
        "ec2:DeleteKeyPair",
        "ec2:DescribeSecurityGroups",
        "ec2:CreateSecurityGroup",
        "ec2:AuthorizeSecurityGroupIngress",
        "ec2:RunInstances",
        "ec2:StartInstances",
        "ec2:StopInstances",
        "ec2:CreateTags",
        "iam:GetRole",
        "iam:CreateRole",
        "iam:PutRolePolicy",
        "iam:GetInstanceProfile",
        "iam:CreateInstanceProfile",
        "iam:AddRoleToInstanceProfile",
        "ssm:GetParameters",
    }
)

#: What AWS also checks for those operations: tags given at creation (ec2:CreateTags,
#: iam:TagRole), handing the agent's role to EC2 (iam:PassRole, for RunInstances and
#: AddRoleToInstanceProfile), and the spot service-linked role AWS creates at an
#: account's first spot launch (iam:CreateServiceLinkedRole).
IMPLIED = frozenset(
    {"ec2:CreateTags", "iam:TagRole", "iam:PassRole", "iam:CreateServiceLinkedRole"}
)

_CONFIG = BotoConfig(
    retries={"mode": "standard", "max_attempts": 5},
    connect_timeout=5,
    read_timeout=30,
    user_agent_extra="idle-watchdog-launcher",
)

Record = dict[str, Any]  # one DescribeInstances / DescribeSecurityGroups record, as AWS sends it


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        raise AwsError(code, str(error.get("Message", str(exc)))) from exc
    except BotoCoreError as exc:
        raise AwsError(type(exc).__name__, str(exc)) from exc


@contextlib.contextmanager
def _unless(*codes: str) -> Iterator[list[bool]]:
    """Turn the listed error codes into a flag (``[True]``) instead of an ``AwsError``;
    e.g. ``DryRunOperation``, which means a dry run would have succeeded."""
    hit = [False]
    try:
        with _errors():
            yield hit
    except AwsError as exc:
        if exc.code not in codes:
            raise
        hit[0] = True


@dataclass(frozen=True)
class TypeInfo:
    architectures: tuple[str, ...]
    vcpus: int


@dataclass(frozen=True)
class ImageRoot:
    device: str
    size_gb: int  # 0 when the image does not say


class LauncherAws:
    """One account (a boto3 session), with the calls for each region made on demand."""

    def __init__(self, session: boto3.Session):
        self.session = session
        self._regions: dict[str, RegionAws] = {}

    @classmethod
    def from_profile(cls, profile: str | None) -> LauncherAws:
        with _errors():  # ProfileNotFound
            return cls(boto3.Session(profile_name=profile or None))

    def check_credentials(self) -> None:
        """Fail now, before anything else is asked, when no credentials can be found.

        Only resolves them locally (no API call); expired ones are told by AWS later.
        """
        with _errors():
            found = self.session.get_credentials()
        if found is None:
            raise AwsError("NoCredentialsError", "Unable to locate credentials")

    def region(self, region: str) -> RegionAws:
        if region not in self._regions:
            self._regions[region] = RegionAws(self.session, region)
        return self._regions[region]


class RegionAws:
    """The calls in one region (IAM is global but signed in the region asked)."""

    def __init__(self, session: boto3.Session, region: str):
        self.region = region
        self._session = session
        self._ec2: EC2Client | None = None
        self._iam: IAMClient | None = None
        self._ssm: SSMClient | None = None

    @property
    def ec2(self) -> EC2Client:
        if self._ec2 is None:
            self._ec2 = self._session.client("ec2", region_name=self.region, config=_CONFIG)
        return self._ec2

    @property
    def iam(self) -> IAMClient:
        if self._iam is None:
            self._iam = self._session.client("iam", region_name=self.region, config=_CONFIG)
        return self._iam

    @property
    def ssm(self) -> SSMClient:
        if self._ssm is None:
            self._ssm = self._session.client("ssm", region_name=self.region, config=_CONFIG)
        return self._ssm

    # --- EC2: reading ---------------------------------------------------------------

    def instances(self, filters: Sequence[Mapping[str, Any]]) -> list[Record]:
        found: list[Record] = []
        with _errors():
            pages = self.ec2.get_paginator("describe_instances").paginate(Filters=filters)  # type: ignore[arg-type]
            for page in pages:
                for reservation in page.get("Reservations", []):
                    found.extend(dict(i) for i in reservation.get("Instances", []))
        return found

    def instance_type(self, instance_type: str) -> TypeInfo | None:
        with _errors():
            answer = self.ec2.describe_instance_types(InstanceTypes=[instance_type])  # type: ignore[list-item]
        types = answer.get("InstanceTypes", [])
        if not types:
            return None
        info = types[0]
        arches = info.get("ProcessorInfo", {}).get("SupportedArchitectures", ["x86_64"])
        return TypeInfo(tuple(arches), int(info.get("VCpuInfo", {}).get("DefaultVCpus", 0)))

    def offered_zones(self, instance_type: str) -> list[str]:
        with _errors():
            answer = self.ec2.describe_instance_type_offerings(
                LocationType="availability-zone",
                Filters=[{"Name": "instance-type", "Values": [instance_type]}],
            )
        return sorted(o["Location"] for o in answer.get("InstanceTypeOfferings", []))

    def default_vpc(self) -> str | None:
        with _errors():
            vpcs = self.ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])
        return vpcs["Vpcs"][0]["VpcId"] if vpcs["Vpcs"] else None

    def default_subnets(self, vpc_id: str) -> list[tuple[str, str]]:
        """[(zone, subnet id)] of the VPC's default subnets, sorted by zone."""
        with _errors():
            subnets = self.ec2.describe_subnets(
                Filters=[
                    {"Name": "vpc-id", "Values": [vpc_id]},
                    {"Name": "default-for-az", "Values": ["true"]},
                ]
            )["Subnets"]
        return sorted((s["AvailabilityZone"], s["SubnetId"]) for s in subnets)

    def image_root(self, image_id: str) -> ImageRoot | None:
        with _errors():
            images = self.ec2.describe_images(ImageIds=[image_id]).get("Images", [])
        if not images:
            return None
        image = images[0]
        root = image.get("RootDeviceName", "/dev/sda1")
        size = next(
            (
                int(m.get("Ebs", {}).get("VolumeSize", 0))
                for m in image.get("BlockDeviceMappings", [])
                if m.get("DeviceName") == root
            ),
            0,
        )
        return ImageRoot(root, size)

    def security_groups_named(self, name: str, vpc_id: str) -> list[Record]:
        with _errors():
            answer = self.ec2.describe_security_groups(
                Filters=[
                    {"Name": "group-name", "Values": [name]},
                    {"Name": "vpc-id", "Values": [vpc_id]},
                ]
            )
        return [dict(g) for g in answer["SecurityGroups"]]

    def security_groups(self, group_ids: Sequence[str]) -> dict[str, Record]:
        """The groups by id (no call at all for none)."""
        groups: dict[str, Record] = {}
        if not group_ids:
            return groups
        with _errors():
            pages = self.ec2.get_paginator("describe_security_groups").paginate(
                GroupIds=list(group_ids)
            )
            for page in pages:
                groups.update({g["GroupId"]: dict(g) for g in page.get("SecurityGroups", [])})
        return groups

    # --- EC2: key pair and security group --------------------------------------------

    def key_pair_exists(self, name: str) -> bool:
        with _unless("InvalidKeyPair.NotFound") as missing:
            self.ec2.describe_key_pairs(KeyNames=[name])
        return not missing[0]

    def create_key_pair(self, name: str, *, dry_run: bool = False) -> str:
        """The new ed25519 key pair's private key ("" from a dry run that would succeed)."""
        if dry_run:
            with _unless("DryRunOperation"):
                self.ec2.create_key_pair(KeyName=name, KeyType="ed25519", DryRun=True)
            return ""
        with _errors():
            answer = self.ec2.create_key_pair(
                KeyName=name,
                KeyType="ed25519",
                TagSpecifications=[
                    {"ResourceType": "key-pair", "Tags": [{"Key": "Name", "Value": name}]}
                ],
            )
        return answer["KeyMaterial"]

    def delete_key_pair(self, name: str) -> None:
        with _errors():
            self.ec2.delete_key_pair(KeyName=name)

    def create_security_group(
        self, name: str, description: str, vpc_id: str, *, dry_run: bool = False
    ) -> str:
        """The new group's id ("" from a dry run that would succeed); tagged Name=name."""
        if dry_run:
            with _unless("DryRunOperation"):
                self.ec2.create_security_group(
                    GroupName=name, Description="idle-watchdog", VpcId=vpc_id, DryRun=True
                )
            return ""
        with _errors():
            return self.ec2.create_security_group(
                GroupName=name,
                Description=description,
                VpcId=vpc_id,
                TagSpecifications=[
                    {"ResourceType": "security-group", "Tags": [{"Key": "Name", "Value": name}]}
                ],
            )["GroupId"]

    def authorize_ingress(
        self, group_id: str, permission: Mapping[str, Any], *, dry_run: bool = False
    ) -> None:
        with _unless("DryRunOperation") if dry_run else _errors():
            self.ec2.authorize_security_group_ingress(
                GroupId=group_id,
                IpPermissions=[permission],  # type: ignore[list-item]
                DryRun=dry_run,
            )

    # --- EC2: instances --------------------------------------------------------------

    def run_instance(self, args: Mapping[str, Any]) -> Record | None:
        """RunInstances with these parameters: the instance, or None when it was a dry
        run that would have succeeded."""
        with _unless("DryRunOperation") as dry:
            answer = self.ec2.run_instances(**args)
        return None if dry[0] else dict(answer["Instances"][0])

    def start_instance(self, instance_id: str) -> None:
        with _errors():
            self.ec2.start_instances(InstanceIds=[instance_id])

    def stop_instance(self, instance_id: str) -> str:
        """Stop (never terminate); the state EC2 reports."""
        with _errors():
            answer = self.ec2.stop_instances(InstanceIds=[instance_id])
        changes = answer.get("StoppingInstances", [])
        return changes[0]["CurrentState"]["Name"] if changes else "stopping"

    def tag_instance(self, instance_id: str, tags: Mapping[str, str]) -> None:
        with _errors():
            self.ec2.create_tags(
                Resources=[instance_id], Tags=[{"Key": k, "Value": v} for k, v in tags.items()]
            )

    # --- SSM and IAM -------------------------------------------------------------------

    def parameters(self, names: Sequence[str]) -> dict[str, str]:
        """The values of those SSM parameters that exist."""
        with _errors():
            answer = self.ssm.get_parameters(Names=list(names))
        return {p["Name"]: p.get("Value", "") for p in answer.get("Parameters", [])}

    def role_exists(self, name: str) -> bool:
        with _unless("NoSuchEntity") as missing:
            self.iam.get_role(RoleName=name)
        return not missing[0]

    def instance_profile_roles(self, name: str) -> list[str] | None:
        """The role names in the instance profile; None when there is no such profile."""
        roles: list[str] = []
        with _unless("NoSuchEntity") as missing:
            answer = self.iam.get_instance_profile(InstanceProfileName=name)
            roles = [r["RoleName"] for r in answer["InstanceProfile"].get("Roles", [])]
        return None if missing[0] else roles

    def create_role(self, name: str, trust_policy: str, description: str) -> None:
        with _errors():
            self.iam.create_role(
                RoleName=name,
                AssumeRolePolicyDocument=trust_policy,
                Description=description,
                Tags=[{"Key": "Name", "Value": name}],
            )

    def put_role_policy(self, role: str, name: str, document: str) -> None:
        with _errors():
            self.iam.put_role_policy(RoleName=role, PolicyName=name, PolicyDocument=document)

    def create_instance_profile(self, name: str) -> None:
        with _errors():
            self.iam.create_instance_profile(InstanceProfileName=name)

    def add_role_to_instance_profile(self, profile: str, role: str) -> None:
        with _errors():
            self.iam.add_role_to_instance_profile(InstanceProfileName=profile, RoleName=role)
