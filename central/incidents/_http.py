"""The incident service's HTTP JSON API, Alertmanager webhook and ``/metrics``.

Routes (JSON in and out; the API has no authentication and binds loopback only)::

    GET  /healthz                              liveness
    GET  /metrics                              Prometheus text format
    GET  /incidents?state=&kind=&subject=&priority=&open=true&limit=
    POST /incidents                            {kind, subject, summary, impact, urgency, ...}
    GET  /incidents/{id}                       incident, deadlines, timeline, problem
    POST /incidents/{id}/{action}              ack|start|hold|resolve|close|reopen|major|note|approve
                                               body {actor, note}
    GET  /problems, GET /problems/{id}
    POST /alertmanager                         Alertmanager webhook, payload version "4"

Errors answer ``{"error": "..."}`` with 400 (bad input), 404 (unknown id),
409 (lifecycle forbids it) or 503 (store unavailable).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from central.incidents._alertmanager import handle_alertmanager_webhook
from central.incidents._errors import (
    DuplicateOpenIncident,
    IllegalTransition,
    IncidentError,
    IncidentNotFound,
    IncidentStoreError,
    InvalidIncident,
    StaleIncident,
)
from central.incidents._metrics import render_metrics
from central.incidents._model import Incident, iso8601
from central.incidents._service import IncidentService
from central.incidents._store import IncidentFilter

__all__ = ["IncidentHTTPServer", "incident_view"]

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 4 * 1024 * 1024
"""Largest request body read; an Alertmanager group of 1000 alerts fits well within it."""

_ACTIONS = {"ack": "acknowledge", "start": "start", "hold": "hold", "resolve": "resolve", "close": "close",
            "reopen": "reopen", "major": "declare_major", "approve": "approve_runbook"}
_INCIDENT_PATH = re.compile(r"^/incidents/([A-Za-z0-9_-]+)(?:/([a-z]+))?$")
_PROBLEM_PATH = re.compile(r"^/problems/([A-Za-z0-9_-]+)$")
_STATUS = [(IncidentNotFound, 404), (IllegalTransition, 409), (DuplicateOpenIncident, 409), (StaleIncident, 409),
           (InvalidIncident, 400), (IncidentStoreError, 503), (IncidentError, 400)]


def incident_view(service: IncidentService, incident: Incident, now: float | None = None) -> dict[str, Any]:
    """An incident as the API and ``--json`` show it: fields, ISO times and SLA deadlines."""
    now = service.clock() if now is None else now
    doc = incident.to_doc()
    for key in ("created_at", "updated_at", "last_seen_at", "responded_at", "resolved_at", "closed_at"):
        doc[f"{key}_iso"] = iso8601(doc[key])
    doc["deadlines"] = {
        target: {"at": iso8601(at), "seconds_left": round(at - now, 3)}
        for target, at in service.deadlines(incident, now).items()
    }
    return doc


class _BadRequest(Exception):
    pass


class IncidentHTTPServer:
    """Serves the API for one :class:`IncidentService` on a background thread.

    Args:
        service: the incident service.
        host: loopback address to bind.
        port: port to bind; 0 picks a free one (see :attr:`port`).
    """

    def __init__(self, service: IncidentService, host: str = "127.0.0.1", port: int = 0) -> None:
        self.service = service
        handler = type("BoundHandler", (_Handler,), {"service": service})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:9465``."""
        return f"http://{self._server.server_address[0]}:{self.port}"

    def start(self) -> None:
        """Serve on a daemon thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, name="incident-http", daemon=True)
        self._thread.start()
        logger.info("incident API listening on %s", self.url)

    def serve_forever(self) -> None:
        """Serve on the calling thread until :meth:`stop`."""
        logger.info("incident API listening on %s", self.url)
        self._server.serve_forever()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    service: IncidentService
    server_version = "pulsegate-incidents/1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        logger.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        try:
            status, body = self._route(method, url.path, parse_qs(url.query))
        except _BadRequest as exc:
            status, body = 400, {"error": str(exc)}
        except IncidentError as exc:
            status = next(code for cls, code in _STATUS if isinstance(exc, cls))
            body = {"error": str(exc)}
            if isinstance(exc, DuplicateOpenIncident) and exc.existing_id:
                body["existing_id"] = exc.existing_id
        except Exception:
            logger.exception("incident API %s %s failed", method, url.path)
            status, body = 500, {"error": "internal error; see the incident service's log"}
        if isinstance(body, bytes):
            self._send(status, body, "text/plain; version=0.0.4; charset=utf-8")
        else:
            self._send(status, json.dumps(body, default=str).encode(), "application/json")

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _json_body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise _BadRequest(f"request body of {length} bytes is over the {MAX_BODY_BYTES}-byte limit")
        raw = self.rfile.read(length) if length else b"{}"
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _BadRequest(f"request body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise _BadRequest("request body must be a JSON object")
        return body

    def _route(self, method: str, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        service = self.service
        if method == "GET" and path == "/healthz":
            return 200, {"status": "ok"}
        if method == "GET" and path == "/metrics":
            return 200, render_metrics(service)
        if method == "POST" and path == "/alertmanager":
            return 200, handle_alertmanager_webhook(service, self._json_body()).to_doc()
        if path == "/incidents":
            return self._list(query) if method == "GET" else self._create(self._json_body())
        if method == "GET" and path == "/problems":
            return 200, {"problems": [p.to_doc() for p in service.store.list_problems(_limit(query))]}
        match = _PROBLEM_PATH.match(path)
        if method == "GET" and match:
            problem = service.store.get_problem(match.group(1))
            if problem is None:
                raise IncidentNotFound(f"no problem {match.group(1)!r}")
            return 200, problem.to_doc()
        match = _INCIDENT_PATH.match(path)
        if match and method == "GET" and match.group(2) is None:
            return 200, self._show(match.group(1))
        if match and method == "POST" and match.group(2):
            return self._act(match.group(1), match.group(2), self._json_body())
        return 404, {"error": f"no route {method} {path}"}

    def _list(self, query: dict[str, list[str]]) -> tuple[int, Any]:
        states = [s for value in query.get("state", []) for s in value.split(",") if s]
        if query.get("open", ["false"])[0] in ("1", "true", "yes"):
            states = ["new", "acknowledged", "in_progress", "on_hold"]
        found = self.service.list_incidents(IncidentFilter(
            states=states or None, kind=_one(query, "kind"), subject=_one(query, "subject"),
            priority=_one(query, "priority"), limit=_limit(query)))
        now = self.service.clock()
        return 200, {"incidents": [incident_view(self.service, i, now) for i in found]}

    def _show(self, incident_id: str) -> dict[str, Any]:
        incident = self.service.get(incident_id)
        problem = self.service.store.get_problem(incident.problem_id) if incident.problem_id else None
        return {
            "incident": incident_view(self.service, incident),
            "timeline": [entry.to_doc() for entry in self.service.timeline(incident_id)],
            "problem": problem.to_doc() if problem else None,
        }

    def _create(self, body: dict[str, Any]) -> tuple[int, Any]:
        allowed = {"kind", "subject", "summary", "impact", "urgency", "category", "priority", "major",
                   "gateway_id", "site", "details", "actor"}
        unknown = set(body) - allowed
        if unknown:
            raise _BadRequest(f"unknown fields {sorted(unknown)!r}; allowed: {', '.join(sorted(allowed))}")
        for name in ("kind", "subject"):
            if not isinstance(body.get(name), str):
                raise _BadRequest(f"field {name!r} (a string) is required")
        before = self.service.store.find_open(body["subject"], body["kind"])
        incident = self.service.raise_incident(
            body["kind"], body["subject"], str(body.get("summary", "")), actor=str(body.get("actor", "api")),
            **{k: body[k] for k in ("impact", "urgency", "category", "priority", "major", "gateway_id", "site",
                                    "details") if k in body})
        return (200 if before else 201), incident_view(self.service, incident)

    def _act(self, incident_id: str, action: str, body: dict[str, Any]) -> tuple[int, Any]:
        actor, note = body.get("actor"), body.get("note", "")
        if not isinstance(actor, str) or not actor.strip():
            raise _BadRequest("field 'actor' (who is doing this, for the audit trail) is required")
        if not isinstance(note, str):
            raise _BadRequest("field 'note' must be a string")
        if action == "note":
            incident = self.service.add_note(incident_id, actor=actor, action="note", note=note)
        elif action in _ACTIONS:
            incident = getattr(self.service, _ACTIONS[action])(incident_id, actor=actor, note=note)
        else:
            raise _BadRequest(f"unknown action {action!r}; use one of {', '.join([*_ACTIONS, 'note'])}")
        return 200, incident_view(self.service, incident)


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _limit(query: dict[str, list[str]]) -> int:
    raw = _one(query, "limit") or "100"
    if not raw.isdigit():
        raise _BadRequest(f"limit must be a positive integer, got {raw!r}")
    return int(raw)
