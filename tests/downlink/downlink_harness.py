"""Helpers of the downlink tests: a vhost of their own, gateway ids, notice bodies, polling."""

from __future__ import annotations

import time
import uuid
from typing import Any
from urllib.parse import quote

from server_harness import (  # noqa: F401  (re-exported for the downlink tests)
    REPO,
    rabbitmqctl,
    wait_for,
)

#: Where `pulsegate-services start rabbitmq` listens (loopback only), without a vhost.
BROKER_ROOT = "amqp://guest:guest@127.0.0.1:5672/"
SITE = "test-site"
RECORDING = REPO / "tests" / "fixtures" / "recordings" / "tcx" / "tcxparser__test.tcx"
#: The emulator's device id is the recording's file stem.
DEVICE_ID = RECORDING.stem


def create_vhost() -> str:
    """A fresh vhost the guest user may use; returns its name."""
    vhost = f"pulsegate-downlink-test-{uuid.uuid4().hex[:10]}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    return vhost


def vhost_url(vhost: str) -> str:
    return BROKER_ROOT + quote(vhost, safe="")


def new_gateway_id() -> str:
    return "gw-dl-" + uuid.uuid4().hex[:10]


def iso_now(offset_s: float = 0.0) -> str:
    """Now (plus ``offset_s``) as central writes it: ISO 8601 UTC with milliseconds."""
    now = time.time() + offset_s
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def notice_body(gateway_id: str, **overrides: Any) -> dict[str, Any]:
    """A notice body shaped like central's gateway outbox event (see IncidentService._derive_events)."""
    body = {
        "incident_id": "INC-" + uuid.uuid4().hex[:16],
        "gateway_id": gateway_id,
        "site": SITE,
        "kind": "heart_rate_high",
        "subject": f"device:{DEVICE_ID}",
        "state": "new",
        "priority": "P2",
        "major": False,
        "summary": "Heart rate above 190 bpm for two minutes",
        "at": iso_now(),
    }
    body.update(overrides)
    return body


