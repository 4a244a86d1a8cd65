"""A PagerDuty Events API v2 receiver on loopback that checks every documented field.

It answers as the API does: 202 with {status, message, dedup_key}; 400 with
{status: "invalid event", message, errors} for a bad event; and whatever
status a test scripts next (429, 500, ...). It also keeps PagerDuty's alert
state per (routing_key, dedup_key): a trigger opens an alert, acknowledge and
resolve apply only to an open one.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ACTIONS = ("trigger", "acknowledge", "resolve")
SEVERITIES = ("critical", "error", "warning", "info")
TOP_LEVEL = {"routing_key", "event_action", "dedup_key", "payload", "images", "links", "client", "client_url"}
PAYLOAD_KEYS = {"summary", "source", "severity", "timestamp", "component", "group", "class", "custom_details"}


def validate_event(event: Any) -> list[str]:
    """Every problem with one event, per the Events API v2 documentation."""
    if not isinstance(event, dict):
        return ["event must be a JSON object"]
    errors = [f"unknown field {k!r}" for k in event if k not in TOP_LEVEL]
    key = event.get("routing_key")
    if not isinstance(key, str) or len(key) != 32:
        errors.append("routing_key must be a 32-character string")
    action = event.get("event_action")
    if action not in ACTIONS:
        errors.append(f"event_action must be one of {ACTIONS}")
    dedup = event.get("dedup_key")
    if dedup is not None and (not isinstance(dedup, str) or not 0 < len(dedup) <= 255):
        errors.append("dedup_key must be a string of at most 255 characters")
    if action in ("acknowledge", "resolve") and dedup is None:
        errors.append(f"{action} needs a dedup_key")
    if action == "trigger":
        errors.extend(_validate_payload(event.get("payload")))
    for name in ("client", "client_url"):
        if name in event and not isinstance(event[name], str):
            errors.append(f"{name} must be a string")
    return errors


def _validate_payload(payload: Any) -> list[str]:
    if not isinstance(payload, dict):
        return ["trigger needs a payload object"]
    errors = [f"unknown payload field {k!r}" for k in payload if k not in PAYLOAD_KEYS]
    summary = payload.get("summary")
    if not isinstance(summary, str) or not 0 < len(summary) <= 1024:
        errors.append("payload.summary must be 1..1024 characters")
    if not isinstance(payload.get("source"), str) or not payload["source"]:
        errors.append("payload.source is required")
    if payload.get("severity") not in SEVERITIES:
        errors.append(f"payload.severity must be one of {SEVERITIES}")
    if "timestamp" in payload:
        try:
            parsed = dt.datetime.fromisoformat(payload["timestamp"])
            if parsed.tzinfo is None:
                errors.append("payload.timestamp needs a time zone")
        except (TypeError, ValueError):
            errors.append("payload.timestamp must be ISO 8601")
    for name in ("component", "group", "class"):
        if name in payload and not isinstance(payload[name], str):
            errors.append(f"payload.{name} must be a string")
    if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
        errors.append("payload.custom_details must be an object")
    return errors


class PagerDutyReceiver:
    """Run with ``start()``; read ``accepted``, ``rejected`` and ``alerts``."""

    def __init__(self, port: int = 0) -> None:
        self.accepted: list[dict[str, Any]] = []
        self.rejected: list[tuple[dict[str, Any], list[str]]] = []
        self.alerts: dict[tuple[str, str], str] = {}
        self.scripted: list[int] = []
        self.requests = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                receiver._handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> PagerDutyReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        with self.lock:
            self.requests += 1
            if self.scripted:
                status = self.scripted.pop(0)
                return _reply(handler, status, {"status": "error", "message": f"scripted {status}"})
            if handler.path != "/v2/enqueue" or handler.headers.get("Content-Type") != "application/json":
                return _reply(handler, 400, {"status": "invalid event", "message": "bad path or content type"})
            try:
                event = json.loads(body)
            except json.JSONDecodeError:
                return _reply(handler, 400, {"status": "invalid event", "message": "Event object is invalid"})
            errors = validate_event(event)
            if errors:
                self.rejected.append((event, errors))
                return _reply(handler, 400, {"status": "invalid event", "message": "Event object is invalid",
                                             "errors": errors})
            self.accepted.append(event)
            self._apply(event)
            return _reply(handler, 202, {"status": "success", "message": "Event processed",
                                         "dedup_key": event.get("dedup_key")})

    def _apply(self, event: dict[str, Any]) -> None:
        key = (event["routing_key"], event["dedup_key"])
        state = self.alerts.get(key)
        if event["event_action"] == "trigger" and state in (None, "resolved"):
            self.alerts[key] = "triggered"
        elif state in ("triggered", "acknowledged"):
            self.alerts[key] = {"acknowledge": "acknowledged", "resolve": "resolved"}.get(event["event_action"], state)


def _reply(handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)
