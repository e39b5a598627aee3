"""A fake EC2 for the demo and the tests: a real moto server on loopback.

moto answers EC2's API over HTTP like AWS does, but models no spot lifecycle
and launches everything "now". The helpers below play AWS's part where moto
does not, by reaching into its in-process backend (the threaded server
shares it); they are the only such reach, so a moto upgrade breaks them here.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from datetime import datetime

MOTO_ACCOUNT = "123456789012"
_FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto server on loopback, with the process pointed at it and fake credentials.

    Yields the endpoint URL. The environment is restored afterwards.
    """
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = dict(os.environ)
    os.environ.update(_FAKE_ENV, AWS_ENDPOINT_URL=endpoint)
    os.environ.pop("AWS_PROFILE", None)
    try:
        yield endpoint
    finally:
        os.environ.clear()
        os.environ.update(saved)
        server.stop()


def set_spot_request_state(region: str, request_id: str, state: str, status_code: str) -> None:
    """Drive a spot request through a state moto never reaches by itself.

    moto models no spot lifecycle (requests are fulfilled at once and stay
    so); this is the one place that reaches into its backend to play AWS's
    part, e.g. ``open`` / ``instance-terminated-by-user`` after the user
    terminated a persistent request's instance.
    """
    from moto.ec2.models import ec2_backends

    request = ec2_backends[MOTO_ACCOUNT][region].spot_instance_requests[request_id]
    request.state = state
    request._status_code = status_code


def set_launch_time(region: str, instance_id: str, when: datetime) -> None:
    """Pretend an instance was (re)started at ``when`` (moto uses the wall clock)."""
    from moto.ec2.models import ec2_backends

    instance = ec2_backends[MOTO_ACCOUNT][region].get_instance_by_id(instance_id)
    if instance is None:
        raise KeyError(instance_id)
    instance.launch_time = when


def set_platform_details(region: str, instance_id: str, details: str = "Linux/UNIX") -> None:
    """Report ``PlatformDetails`` as EC2 does for every instance (moto leaves it out).

    Billing depends on it: Linux bills per second, an unknown platform per started hour.
    """
    from moto.ec2.models import ec2_backends

    instance = ec2_backends[MOTO_ACCOUNT][region].get_instance_by_id(instance_id)
    if instance is None:
        raise KeyError(instance_id)
    instance.platform_details = details  # type: ignore[attr-defined]  # moto serializes it by name


def set_attach_time(region: str, volume_id: str, when: datetime) -> None:
    """Pretend a volume was attached at ``when`` (moto stamps the wall clock)."""
    from moto.ec2.models import ec2_backends

    volume = ec2_backends[MOTO_ACCOUNT][region].volumes[volume_id]
    if volume.attachment is None:
        raise KeyError(volume_id)
    volume.attachment.attach_time = when
