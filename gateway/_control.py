"""The local control API: newline-delimited JSON on a Unix socket (see CONTROL_API.md)."""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.errors import GatewayError

if TYPE_CHECKING:
    from gateway._daemon import GatewayDaemon

__all__ = ["ControlServer", "SOCKET_FILENAME"]

log = logging.getLogger(__name__)

SOCKET_FILENAME = "control.sock"
#: A request is a small JSON object; anything longer is a confused or
#: hostile client, and reading it whole would let it exhaust memory.
MAX_REQUEST_BYTES = 64 * 1024

Progress = Callable[[int, int], None]


class _Handler(socketserver.StreamRequestHandler):
    server: _UnixServer

    def handle(self) -> None:
        if not self._peer_allowed():
            self._send({"id": None, "ok": False, "error": "permission denied: run as root or the gateway's user"})
            return
        while True:
            line = self.rfile.readline(MAX_REQUEST_BYTES + 1)
            if not line:
                return
            if len(line) > MAX_REQUEST_BYTES:
                self._send({"id": None, "ok": False, "error": f"request longer than {MAX_REQUEST_BYTES} bytes"})
                return
            self._answer(line)

    def _peer_allowed(self) -> bool:
        creds = self.request.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return uid in (0, os.getuid())

    def _send(self, message: dict[str, Any]) -> None:
        self.wfile.write(json.dumps(message, default=str).encode() + b"\n")
        self.wfile.flush()

    def _answer(self, line: bytes) -> None:
        try:
            request = json.loads(line)
            request_id, op, args = request.get("id"), request["op"], request.get("args") or {}
        except (ValueError, KeyError, AttributeError, TypeError):
            self._send({"id": None, "ok": False, "error": 'not a request: send {"id": N, "op": NAME, "args": {...}}'})
            return
        handler = self.server.operations.get(op)
        if handler is None:
            self._send({"id": request_id, "ok": False,
                        "error": f"unknown op {op!r}; known: {', '.join(sorted(self.server.operations))}"})
            return

        def progress(done: int, total: int) -> None:
            self._send({"id": request_id, "progress": {"done": done, "total": total}})

        try:
            result = handler(args, progress)
        except GatewayError as exc:
            self._send({"id": request_id, "ok": False, "error": str(exc)})
        except (TypeError, KeyError, ValueError) as exc:
            self._send({"id": request_id, "ok": False, "error": f"bad arguments for {op}: {exc}"})
        except Exception as exc:  # a bug: report it, keep serving
            log.exception("control op %s failed", op)
            self._send({"id": request_id, "ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"})
        else:
            self._send({"id": request_id, "ok": True, "result": result})


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    operations: dict[str, Callable[[dict[str, Any], Progress], Any]]


class ControlServer:
    """Serves the daemon's operations on ``<state_dir>/control.sock``."""

    def __init__(self, daemon: GatewayDaemon, state_dir: Path) -> None:
        self.path = Path(state_dir) / SOCKET_FILENAME
        self._daemon = daemon
        self._server: _UnixServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        # The daemon holds the state-dir lock, so a socket file here is a
        # leftover of a crashed run.
        self.path.unlink(missing_ok=True)
        old_umask = os.umask(0o177)  # the socket is created 0600
        try:
            self._server = _UnixServer(str(self.path), _Handler)
        finally:
            os.umask(old_umask)
        self._server.operations = self._operations()
        self._thread = threading.Thread(target=self._server.serve_forever, name="control-api", daemon=True)
        self._thread.start()
        log.info("control API on %s", self.path)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self.path.unlink(missing_ok=True)

    def _operations(self) -> dict[str, Callable[[dict[str, Any], Progress], Any]]:
        d = self._daemon
        return {
            "ping": lambda a, p: {"gateway_id": d.settings.gateway.id, "pid": os.getpid()},
            "status": lambda a, p: d.status(),
            "device": lambda a, p: d.device(str(a["device_id"])),
            "pause_uplink": lambda a, p: d.uplink_action("pause"),
            "resume_uplink": lambda a, p: d.uplink_action("resume"),
            "sync_now": lambda a, p: d.uplink_action("sync_now"),
            "export": lambda a, p: d.export(Path(str(a["path"])), p),
            "test_cue": lambda a, p: d.test_cue(a.get("device_id"), voice=bool(a.get("voice", True))),
            "rescan_bluetooth": lambda a, p: d.rescan_bluetooth(),
            "ack_alarm": lambda a, p: d.ack_alarm(str(a["alarm_id"])),
        }
