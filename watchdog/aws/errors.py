"""The AWS edge's one failure type, importable without boto3 (the CLI starts fast)."""

from __future__ import annotations


class AwsError(Exception):
    """An AWS call failed. ``code`` is AWS's error code, or botocore's exception name
    (``NoCredentialsError``, ``ProfileNotFound`` ...) when it never reached AWS."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
