"""Errors and hints (pure): AWS's error codes in plain words, and the quota to request."""

from __future__ import annotations

from dataclasses import replace

import pytest

from watchdog.launch.errors import ErrorContext, explain, quota_for

REGION = "us-east-1"


@pytest.mark.parametrize(
    ("itype", "spot", "name", "code"),
    [
        ("g5.xlarge", False, "Running On-Demand G and VT instances", "L-DB2E81BA"),
        ("g4dn.12xlarge", True, "All G and VT Spot Instance Requests", "L-3819A6DF"),
        ("vt1.3xlarge", False, "Running On-Demand G and VT instances", "L-DB2E81BA"),
        ("p4d.24xlarge", False, "Running On-Demand P instances", "L-417A185B"),
        ("p3.2xlarge", True, "All P4, P3 and P2 Spot Instance Requests", "L-7212CCBC"),
        ("p5.48xlarge", True, "All P5 Spot Instance Requests", ""),
        ("inf2.xlarge", False, "Running On-Demand Inf instances", ""),
        ("trn1.2xlarge", True, "All Trn Spot Instance Requests", ""),
        ("dl1.24xlarge", False, "Running On-Demand DL instances", ""),
        ("x2iedn.xlarge", False, "Running On-Demand X instances", ""),
        (
            "m5.large",
            False,
            "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances",
            "L-1216C47A",
        ),
        (
            "t3.micro",
            True,
            "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests",
            "L-34B43A08",
        ),
        (
            "im4gn.large",
            False,
            "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances",
            "L-1216C47A",
        ),
    ],
)
def test_quota_names_the_one_to_request(itype: str, spot: bool, name: str, code: str) -> None:
    assert quota_for(itype, spot=spot) == (name, code)


CTX = ErrorContext(region=REGION, instance_type="g5.xlarge", vcpus=4)


@pytest.mark.parametrize(
    ("code", "message", "ctx", "words"),
    [
        (
            "VcpuLimitExceeded",
            "You have requested more vCPU capacity than your current vCPU limit of 0",
            CTX,
            [
                '"Running On-Demand G and VT instances"',
                "https://us-east-1.console.aws.amazon.com/servicequotas/home/services/ec2/quotas/L-DB2E81BA",
                "needs 4 vCPUs",
            ],
        ),
        (
            "VcpuLimitExceeded",
            "limit of 0",
            replace(CTX, spot=True),
            ['"All G and VT Spot Instance Requests"', "quotas/L-3819A6DF"],
        ),
        ("InstanceLimitExceeded", "limit", CTX, ["Running On-Demand G and VT instances"]),
        (
            "MaxSpotInstanceCountExceeded",
            "Max spot instance count exceeded",
            replace(CTX, spot=True),
            ["All G and VT Spot Instance Requests"],
        ),
        (
            "InsufficientInstanceCapacity",
            "We currently do not have sufficient g5.xlarge capacity",
            replace(CTX, zones_tried=("us-east-1a",), zones_offered=("us-east-1a", "us-east-1b")),
            [
                "no spare g5.xlarge capacity",
                "us-east-1a",
                "zones not tried: us-east-1b",
                "--region",
            ],
        ),
        (
            "Unsupported",
            "Your requested instance type (g5.xlarge) is not supported in your requested AZ",
            replace(CTX, zones_tried=("us-east-1e",)),
            ["g5.xlarge is not available in us-east-1e", "describe-instance-type-offerings"],
        ),
        (
            "InvalidParameterValue",
            "Invalid value 'g5.huge' for InstanceType.",
            replace(CTX, instance_type="g5.huge"),
            ["'g5.huge' is not an instance type EC2 offers in us-east-1"],
        ),
        ("InvalidInstanceType", "", CTX, ["not an instance type"]),
        ("Unsupported", "", CTX, ["g5.xlarge is not available in any zone in us-east-1."]),
        (
            "ExpiredToken",
            "The security token included in the request is expired",
            CTX,
            ["aws sso login"],
        ),
        ("ExpiredTokenException", "expired", CTX, ["aws sso login"]),
        ("RequestExpired", "Request has expired.", CTX, ["aws sso login", "clock"]),
        (
            "AuthFailure",
            "AWS was not able to validate the provided access credentials",
            CTX,
            ["aws sso login", "get-caller-identity"],
        ),
        (
            "NoCredentialsError",
            "Unable to locate credentials",
            CTX,
            ["aws configure", "AWS_PROFILE"],
        ),
        (
            "UnauthorizedOperation",
            "You are not authorized",
            CTX,
            ["not allowed", "deploy/iam/launcher-policy.json", "decode-authorization-message"],
        ),
        (
            "InvalidAMIID.NotFound",
            "The image id '[ami-1]' does not exist",
            replace(CTX, ami="ami-1"),
            ["ami-1 does not exist in us-east-1"],
        ),
        (
            "UnsupportedOperation",
            "You can't stop the Spot Instance 'i-1' because it is associated with a one-time "
            "Spot Instance request.",
            CTX,
            ["cannot be stopped", "--persistent"],
        ),
        ("SomethingNew", "odd", CTX, ["AWS said SomethingNew: odd"]),
    ],
)
def test_errors_people_hit_get_plain_answers(
    code: str, message: str, ctx: ErrorContext, words: list[str]
) -> None:
    answer = explain(code, message, ctx)
    for word in words:
        assert word in answer
