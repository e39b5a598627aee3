"""The CloudFormation templates, as Python data: the hub stack and the member-account role.

Built as dicts (JSON is the output; YAML when PyYAML is there) so tests can
read them as data: cfn-lint checks them against AWS's resource schemas, and
moto's CloudFormation creates what it supports.

- **hub**: the DynamoDB table (pay per request, TTL), the work queue with
  its dead-letter queue, the SNS topic, the three functions (``tick``,
  ``work``, ``keep``) each with its own least-privilege role and log group,
  the EventBridge Scheduler schedule that calls ``tick``, the SQS mapping
  that feeds ``work`` (partial batch failures), the keep function's URL, and
  alarms on the dead-letter queue and on each function's errors.
- **member**: the role a member account gives the hub (a StackSet deploys
  it everywhere). It trusts only the hub's worker and keep roles, and only
  with the external id; its permissions are the desktop scheduler's IAM
  policy, read from ``watchdog/deploy/scheduler-policy.json``, so the two
  cannot drift.

The keep function's URL has ``AuthType NONE`` on purpose: the person
clicking a Keep link in an e-mail has no AWS credentials. Each link carries
an HMAC signature (secret in SSM), expires at the stop time and names one
instance; the function refuses anything else.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from typing import Any

from watchdog.cloud.handler import (
    CONFIG_ENV,
    KEEP_URL_ENV,
    QUEUE_ENV,
    SECRET_ENV,
    TABLE_ENV,
    TICK_INPUT,
    TOPIC_ENV,
)
from watchdog.cloud.history import TABLE_SCHEMA, TTL_ATTRIBUTE, WORKER_TIMEOUT_SECONDS
from watchdog.core.settings import Config

Json = dict[str, Any]

RUNTIME = "python3.12"
HANDLERS = {
    "Tick": "watchdog.cloud.handler.tick",
    "Work": "watchdog.cloud.handler.work",
    "Keep": "watchdog.cloud.handler.keep",
}
# The handlers' environment, table and schedule input, from their own modules,
# so the template cannot drift from what the code reads.
#: AWS advises a queue visibility of six times the function's timeout for an SQS mapping.
VISIBILITY_SECONDS = 6 * WORKER_TIMEOUT_SECONDS
MAX_RECEIVES = 3  # then the message goes to the dead-letter queue (and its alarm fires)
BATCH_SIZE = 10
LOG_RETENTION_DAYS = 30
MEMBER_ROLE_NAME = "idle-watchdog-member"

_SSM_ARN = "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter"
_PARAMETER_PATTERN = "^/[A-Za-z0-9_.\\-/]+$"


def schedule_minutes(cfg: Config) -> int:
    """The schedule's period: ``poll_seconds`` rounded up to whole minutes, at least one."""
    return max(1, math.ceil(cfg.scheduler.poll_seconds / 60))


#: The desktop's ledger and report reads: the team's pass prices from the table and
#: keeps no ledger, so its roles do without them.
DESKTOP_ONLY = ("ReadWhatInstancesCost", "ReadListPrices", "ReconcileWithCostExplorer")


def scheduler_policy() -> Json:
    """The desktop scheduler's IAM policy less its cost reads: the member role's
    permissions (one source, so the two cannot drift)."""
    text = resources.files("watchdog").joinpath("deploy/scheduler-policy.json").read_text("utf-8")
    policy: Json = json.loads(text)
    policy["Statement"] = [s for s in policy["Statement"] if s.get("Sid") not in DESKTOP_ONLY]
    return policy


def _trust(service: str) -> Json:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": service},
                "Action": "sts:AssumeRole",
            }
        ],
    }


def _allow(sid: str, actions: list[str], resource: Any, condition: Json | None = None) -> Json:
    statement: Json = {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resource}
    if condition:
        statement["Condition"] = condition
    return statement


def _parameter_arn(name_ref: str) -> Json:
    """The ARN of the SSM parameter named by a template parameter (names start with '/')."""
    return {"Fn::Sub": f"{_SSM_ARN}${{{name_ref}}}"}


def _log_statement(function: str) -> Json:
    return _allow(
        "OwnLogGroup",
        ["logs:CreateLogStream", "logs:PutLogEvents"],
        {"Fn::GetAtt": [f"{function}LogGroup", "Arn"]},
    )


def _decrypt_ssm() -> Json:
    """SecureString parameters under the account's default key (alias/aws/ssm), via SSM only."""
    return _allow(
        "DecryptSecureStrings",
        ["kms:Decrypt"],
        "*",
        {
            "StringEquals": {"kms:ViaService": {"Fn::Sub": "ssm.${AWS::Region}.amazonaws.com"}},
            "ForAnyValue:StringEquals": {"kms:ResourceAliases": "alias/aws/ssm"},
        },
    )


def _member_roles() -> Json:
    return _allow(
        "AssumeMemberRole",
        ["sts:AssumeRole"],
        {"Fn::Sub": "arn:${AWS::Partition}:iam::*:role/${MemberRoleName}"},
    )


def _table_access(actions: list[str]) -> Json:
    return _allow(
        "HistoryTable", [f"dynamodb:{a}" for a in actions], {"Fn::GetAtt": ["Table", "Arn"]}
    )


def _hub_account_fleet() -> list[Json]:
    """The member role's permissions, for the hub's own account (entered without a role)."""
    return [dict(s, Sid=f"HubAccount{s['Sid']}") for s in scheduler_policy()["Statement"]]


def _role(name: str, service: str, statements: list[Json]) -> Json:
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": _trust(service),
            "Policies": [
                {
                    "PolicyName": name,
                    "PolicyDocument": {"Version": "2012-10-17", "Statement": statements},
                }
            ],
        },
    }


def _function(name: str, memory: int, timeout: int, environment: Json) -> Json:
    return {
        "Type": "AWS::Lambda::Function",
        "Properties": {
            "Description": f"idle-watchdog {name.lower()} ({HANDLERS[name]})",
            "Runtime": RUNTIME,
            "Handler": HANDLERS[name],
            "Code": {"S3Bucket": {"Ref": "CodeBucket"}, "S3Key": {"Ref": "CodeKey"}},
            "Role": {"Fn::GetAtt": [f"{name}Role", "Arn"]},
            "MemorySize": memory,
            "Timeout": timeout,
            "Architectures": ["arm64"],
            "LoggingConfig": {"LogGroup": {"Ref": f"{name}LogGroup"}},
            "Environment": {"Variables": environment},
        },
    }


def _log_group() -> Json:
    return {
        "Type": "AWS::Logs::LogGroup",
        "Properties": {"RetentionInDays": LOG_RETENTION_DAYS},
    }


def _alarm(description: str, namespace: str, metric: str, dimension: Json) -> Json:
    return {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            "AlarmDescription": description,
            "Namespace": namespace,
            "MetricName": metric,
            "Dimensions": [dimension],
            "Statistic": "Maximum" if namespace == "AWS/SQS" else "Sum",
            "Period": 300,
            "EvaluationPeriods": 1,
            "Threshold": 0,
            "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching",
            "AlarmActions": [{"Ref": "AlarmTopic"}],
        },
    }


def _parameters(cfg: Config) -> Json:
    cloud = cfg.cloud
    return {
        "ConfigParameterName": {
            "Type": "String",
            "Default": "/idle-watchdog/config",
            "AllowedPattern": _PARAMETER_PATTERN,
            "Description": "SSM parameter (String) holding the TOML config",
        },
        "LinkSecretParameterName": {
            "Type": "String",
            "Default": cloud.link_secret_parameter,
            "AllowedPattern": _PARAMETER_PATTERN,
            "Description": "SSM SecureString holding the links' HMAC secret",
        },
        "SlackWebhookParameterName": {
            "Type": "String",
            "Default": cloud.slack_webhook_parameter,
            "AllowedPattern": f"({_PARAMETER_PATTERN})?",
            "Description": "SSM SecureString holding a Slack webhook URL (empty: no Slack)",
        },
        "MemberRoleName": {
            "Type": "String",
            "Default": cloud.role_name,
            "Description": "the role the member template creates in each account",
        },
        "CodeBucket": {"Type": "String", "Description": "S3 bucket of the deployment zip"},
        "CodeKey": {"Type": "String", "Description": "S3 key of the deployment zip"},
        "ScheduleMinutes": {
            "Type": "Number",
            "Default": schedule_minutes(cfg),
            "MinValue": 1,
            "Description": "minutes between ticks ([scheduler] poll_seconds, at least 1)",
        },
        "AlarmEmail": {
            "Type": "String",
            "Default": "",
            "Description": "e-mail told when the dead-letter queue or a function fails "
            "(empty: subscribe to AlarmTopic yourself)",
        },
    }


def hub(cfg: Config) -> Json:
    """The hub stack: everything the team shell runs on, in one account and region."""
    secrets = [_parameter_arn("ConfigParameterName"), _parameter_arn("LinkSecretParameterName")]
    worker_parameters: list[Any] = [
        *secrets,
        {
            "Fn::If": [
                "HasSlack",
                _parameter_arn("SlackWebhookParameterName"),
                {"Ref": "AWS::NoValue"},
            ]
        },
    ]
    environment = {
        TABLE_ENV: {"Ref": "Table"},
        QUEUE_ENV: {"Ref": "WorkQueue"},
        CONFIG_ENV: {"Ref": "ConfigParameterName"},
        SECRET_ENV: {"Ref": "LinkSecretParameterName"},
        TOPIC_ENV: {"Ref": "Topic"},
    }
    resources_: Json = {
        "Table": {
            "Type": "AWS::DynamoDB::Table",
            "Properties": {
                **TABLE_SCHEMA,
                "TimeToLiveSpecification": {"AttributeName": TTL_ATTRIBUTE, "Enabled": True},
                "SSESpecification": {"SSEEnabled": True},
            },
        },
        "DeadLetterQueue": {
            "Type": "AWS::SQS::Queue",
            "Properties": {"MessageRetentionPeriod": 14 * 24 * 3600, "SqsManagedSseEnabled": True},
        },
        "WorkQueue": {
            "Type": "AWS::SQS::Queue",
            "Properties": {
                "VisibilityTimeout": VISIBILITY_SECONDS,
                "SqsManagedSseEnabled": True,
                "RedrivePolicy": {
                    "deadLetterTargetArn": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]},
                    "maxReceiveCount": MAX_RECEIVES,
                },
            },
        },
        "Topic": {"Type": "AWS::SNS::Topic", "Properties": {"DisplayName": "idle-watchdog"}},
        "AlarmTopic": {
            "Type": "AWS::SNS::Topic",
            "Properties": {"DisplayName": "idle-watchdog alarms"},
        },
        "AlarmEmailSubscription": {
            "Type": "AWS::SNS::Subscription",
            "Condition": "HasAlarmEmail",
            "Properties": {
                "TopicArn": {"Ref": "AlarmTopic"},
                "Protocol": "email",
                "Endpoint": {"Ref": "AlarmEmail"},
            },
        },
        "TickLogGroup": _log_group(),
        "WorkLogGroup": _log_group(),
        "KeepLogGroup": _log_group(),
        "TickRole": _role(
            "tick",
            "lambda.amazonaws.com",
            [
                _log_statement("Tick"),
                _allow("FanOut", ["sqs:SendMessage"], {"Fn::GetAtt": ["WorkQueue", "Arn"]}),
                _allow("ListMemberAccounts", ["organizations:ListAccounts"], "*"),
                _allow("ReadConfig", ["ssm:GetParameter"], _parameter_arn("ConfigParameterName")),
            ],
        ),
        "WorkRole": _role(
            "work",
            "lambda.amazonaws.com",
            [
                _log_statement("Work"),
                _member_roles(),
                _table_access(
                    [
                        "GetItem",
                        "PutItem",
                        "UpdateItem",
                        "DeleteItem",
                        "Query",
                        "ConditionCheckItem",
                    ]
                ),
                _allow(
                    "ReadWorkQueue",
                    ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
                    {"Fn::GetAtt": ["WorkQueue", "Arn"]},
                ),
                _allow("Notify", ["sns:Publish"], {"Ref": "Topic"}),
                _allow("ReadParameters", ["ssm:GetParameter"], worker_parameters),
                _decrypt_ssm(),
                *_hub_account_fleet(),
            ],
        ),
        "KeepRole": _role(
            "keep",
            "lambda.amazonaws.com",
            [
                _log_statement("Keep"),
                _member_roles(),
                _table_access(["GetItem", "PutItem", "UpdateItem", "Query"]),
                _allow("ReadParameters", ["ssm:GetParameter"], secrets),
                _decrypt_ssm(),
                *_hub_account_fleet(),
            ],
        ),
        "SchedulerRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "scheduler.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                            "Condition": {
                                "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
                            },
                        }
                    ],
                },
                "Policies": [
                    {
                        "PolicyName": "invoke-tick",
                        "PolicyDocument": {
                            "Version": "2012-10-17",
                            "Statement": [
                                _allow(
                                    "InvokeTick",
                                    ["lambda:InvokeFunction"],
                                    {"Fn::GetAtt": ["TickFunction", "Arn"]},
                                )
                            ],
                        },
                    }
                ],
            },
        },
        "TickFunction": _function("Tick", 256, 60, environment),
        "WorkFunction": _function(
            "Work",
            512,
            WORKER_TIMEOUT_SECONDS,
            {**environment, KEEP_URL_ENV: {"Fn::GetAtt": ["KeepUrl", "FunctionUrl"]}},
        ),
        "KeepFunction": _function("Keep", 256, 30, environment),
        "WorkQueueMapping": {
            "Type": "AWS::Lambda::EventSourceMapping",
            "Properties": {
                "EventSourceArn": {"Fn::GetAtt": ["WorkQueue", "Arn"]},
                "FunctionName": {"Ref": "WorkFunction"},
                "BatchSize": BATCH_SIZE,
                "FunctionResponseTypes": ["ReportBatchItemFailures"],
            },
        },
        "KeepUrl": {
            "Type": "AWS::Lambda::Url",
            "Properties": {
                "TargetFunctionArn": {"Fn::GetAtt": ["KeepFunction", "Arn"]},
                "AuthType": "NONE",  # the HMAC-signed link is the authentication
            },
        },
        "KeepUrlPermission": {
            "Type": "AWS::Lambda::Permission",
            "Properties": {
                "FunctionName": {"Ref": "KeepFunction"},
                "Action": "lambda:InvokeFunctionUrl",
                "Principal": "*",
                "FunctionUrlAuthType": "NONE",
            },
        },
        "KeepUrlInvokePermission": {
            "Type": "AWS::Lambda::Permission",
            "Properties": {
                "FunctionName": {"Ref": "KeepFunction"},
                "Action": "lambda:InvokeFunction",
                "Principal": "*",
                "InvokedViaFunctionUrl": True,
            },
        },
        "TickSchedule": {
            "Type": "AWS::Scheduler::Schedule",
            "Properties": {
                "Description": "idle-watchdog: one tick per [scheduler] poll_seconds",
                "ScheduleExpression": {
                    "Fn::If": [
                        "EveryMinute",
                        "rate(1 minute)",
                        {"Fn::Sub": "rate(${ScheduleMinutes} minutes)"},
                    ]
                },
                "FlexibleTimeWindow": {"Mode": "OFF"},
                "Target": {
                    "Arn": {"Fn::GetAtt": ["TickFunction", "Arn"]},
                    "RoleArn": {"Fn::GetAtt": ["SchedulerRole", "Arn"]},
                    "Input": TICK_INPUT,
                    "RetryPolicy": {"MaximumRetryAttempts": 0},
                },
            },
        },
        "DeadLetterAlarm": _alarm(
            "idle-watchdog: a pass failed three times (messages in the dead-letter queue)",
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            {"Name": "QueueName", "Value": {"Fn::GetAtt": ["DeadLetterQueue", "QueueName"]}},
        ),
    }
    for name in HANDLERS:
        resources_[f"{name}ErrorsAlarm"] = _alarm(
            f"idle-watchdog: the {name.lower()} function failed",
            "AWS/Lambda",
            "Errors",
            {"Name": "FunctionName", "Value": {"Ref": f"{name}Function"}},
        )
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "idle-watchdog hub: the team scheduler (tick, work, keep) on Lambda",
        "Parameters": _parameters(cfg),
        "Conditions": {
            "HasSlack": {"Fn::Not": [{"Fn::Equals": [{"Ref": "SlackWebhookParameterName"}, ""]}]},
            "HasAlarmEmail": {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]},
            "EveryMinute": {"Fn::Equals": [{"Ref": "ScheduleMinutes"}, "1"]},
        },
        "Resources": resources_,
        "Outputs": {
            "TableName": {"Value": {"Ref": "Table"}},
            "QueueUrl": {"Value": {"Ref": "WorkQueue"}},
            "TopicArn": {"Value": {"Ref": "Topic"}},
            "AlarmTopicArn": {"Value": {"Ref": "AlarmTopic"}},
            "KeepUrl": {"Value": {"Fn::GetAtt": ["KeepUrl", "FunctionUrl"]}},
            "WorkRoleArn": {"Value": {"Fn::GetAtt": ["WorkRole", "Arn"]}},
            "KeepRoleArn": {"Value": {"Fn::GetAtt": ["KeepRole", "Arn"]}},
        },
    }


def member(cfg: Config) -> Json:
    """The role in each member account: the desktop's permissions, trusting only the hub."""
    cloud = cfg.cloud
    external: Json = {
        "Type": "String",
        "MinLength": 2,
        "Description": "sts:ExternalId the hub passes ([cloud] external_id)",
    }
    if cloud.external_id:
        external["Default"] = cloud.external_id
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "idle-watchdog member role: the hub may describe, stop and tag managed "
        "instances here, as the desktop scheduler's policy allows",
        "Parameters": {
            "WorkRoleArn": {"Type": "String", "Description": "the hub stack's WorkRoleArn output"},
            "KeepRoleArn": {"Type": "String", "Description": "the hub stack's KeepRoleArn output"},
            "ExternalId": external,
            "RoleName": {"Type": "String", "Default": cloud.role_name or MEMBER_ROLE_NAME},
        },
        "Resources": {
            "MemberRole": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "RoleName": {"Ref": "RoleName"},
                    "MaxSessionDuration": 3600,
                    "AssumeRolePolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Principal": {
                                    "AWS": [{"Ref": "WorkRoleArn"}, {"Ref": "KeepRoleArn"}]
                                },
                                "Action": "sts:AssumeRole",
                                "Condition": {
                                    "StringEquals": {"sts:ExternalId": {"Ref": "ExternalId"}}
                                },
                            }
                        ],
                    },
                    "Policies": [
                        {
                            "PolicyName": "idle-watchdog-scheduler",
                            "PolicyDocument": scheduler_policy(),
                        }
                    ],
                },
            }
        },
        "Outputs": {"MemberRoleArn": {"Value": {"Fn::GetAtt": ["MemberRole", "Arn"]}}},
    }


def render(template: Json, fmt: str = "json") -> str:
    """The template as JSON (default) or YAML (needs PyYAML)."""
    if fmt == "yaml":
        import yaml

        return str(yaml.safe_dump(template, sort_keys=False, width=100))
    return json.dumps(template, indent=2) + "\n"
