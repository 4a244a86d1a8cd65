"""An asyncio client for the gateway's control API (see gateway/CONTROL_API.md).

Newline-delimited JSON over the Unix socket ``<state_dir>/control.sock``. One
request at a time per connection: the daemon answers a connection's requests
in order, so a slow ``export`` gets a connection of its own (see
:meth:`ControlClient.request` and ``GatewayFeed.run_action``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tui.errors import ControlError, DaemonRefusedError, DaemonUnavailableError

__all__ = ["ControlClient", "CONTROL_SOCKET_FILENAME", "ProgressCallback"]

log = logging.getLogger(__name__)

#: Where the daemon listens inside its state directory (CONTROL_API.md).
CONTROL_SOCKET_FILENAME = "control.sock"

#: Longest response line we accept. A status document with 64 trackers and
#: 60 alarms is well under 1 MiB; the cap stops a confused peer from making
#: the UI buffer without bound (asyncio's default of 64 KiB is too small).
MAX_RESPONSE_LINE_BYTES = 8 * 1024 * 1024

#: Called with ``(done, total)`` for each progress line of a long operation.
ProgressCallback = Callable[[int, int], None]


class ControlClient:
    """One connection to the daemon's control socket, reopened on demand.

    A lost connection raises :class:`DaemonUnavailableError` from the request
    that saw it; the next request connects again, so a caller that keeps
    polling recovers by itself once the daemon is back.

    Args:
        socket_path: The daemon's control socket.
        idle_timeout_s: Longest silence allowed between two lines of a
            response before the daemon is considered hung.
    """

    def __init__(self, socket_path: Path, *, idle_timeout_s: float = 5.0) -> None:
        self.socket_path = Path(socket_path)
        self.idle_timeout_s = idle_timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._ids = itertools.count(1)
        # Requests on one connection are answered in order; the lock keeps a
        # second caller from reading the first caller's response.
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        """Whether a connection is open (it may still turn out to be dead)."""
        return self._writer is not None and not self._writer.is_closing()

    async def connect(self) -> None:
        """Open the connection if it is not open.

        Raises:
            DaemonUnavailableError: no socket, or nobody listening on it.
        """
        if self.connected:
            return
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(self.socket_path), limit=MAX_RESPONSE_LINE_BYTES),
                timeout=self.idle_timeout_s,
            )
        except FileNotFoundError:
            raise DaemonUnavailableError(f"no control socket at {str(self.socket_path)!r}") from None
        except (OSError, TimeoutError) as exc:
            raise DaemonUnavailableError(
                f"cannot connect to {str(self.socket_path)!r}: {exc.strerror or type(exc).__name__}"
                if isinstance(exc, OSError) else f"connecting to {str(self.socket_path)!r} timed out"
            ) from exc

    async def close(self) -> None:
        """Close the connection; safe to call when it is not open."""
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass  # the peer is already gone; closing is all we wanted

    async def request(
        self, op: str, args: dict[str, Any] | None = None, *, on_progress: ProgressCallback | None = None,
        idle_timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Send one request and return its ``result``.

        Args:
            op: The operation, e.g. ``"status"``.
            args: Its arguments.
            on_progress: Called for each progress line before the final answer.
            idle_timeout_s: Overrides the client's idle timeout for this request.

        Returns:
            The ``result`` object of the final response.

        Raises:
            DaemonUnavailableError: the connection failed, closed or went silent.
            DaemonRefusedError: the daemon answered ``ok: false``.
            ControlError: the daemon sent something that is not the protocol.
        """
        async with self._lock:
            await self.connect()
            request_id = next(self._ids)
            line = json.dumps({"id": request_id, "op": op, "args": args or {}}).encode() + b"\n"
            writer = self._writer
            if writer is None:  # connect() either opened it or raised
                raise DaemonUnavailableError(f"no connection to {str(self.socket_path)!r}")
            try:
                writer.write(line)
                await writer.drain()
                return await self._read_answer(op, request_id, on_progress, idle_timeout_s or self.idle_timeout_s)
            except (OSError, EOFError, TimeoutError, ValueError) as exc:
                await self.close()
                if isinstance(exc, ValueError):  # not JSON, or a line over the cap
                    raise ControlError(f"the daemon sent something that is not the control protocol: {exc}") from exc
                raise DaemonUnavailableError(f"lost the gateway daemon during {op!r}: {_describe(exc)}") from exc

    async def _read_answer(
        self, op: str, request_id: int, on_progress: ProgressCallback | None, idle_timeout_s: float
    ) -> dict[str, Any]:
        reader = self._reader
        if reader is None:
            raise EOFError("the connection is closed")
        while True:
            raw = await asyncio.wait_for(reader.readline(), timeout=idle_timeout_s)
            if not raw:
                raise EOFError("the daemon closed the connection")
            message = json.loads(raw)
            if not isinstance(message, dict):
                raise ValueError(f"expected a JSON object, got {raw[:80]!r}")
            if message.get("id") not in (request_id, None):
                continue  # a late answer to a request that timed out on this connection
            if "progress" in message:
                if on_progress is not None:
                    progress = message["progress"]
                    on_progress(int(progress.get("done", 0)), int(progress.get("total", 0)))
                continue
            if message.get("ok"):
                result = message.get("result")
                return result if isinstance(result, dict) else {"value": result}
            raise DaemonRefusedError(op, str(message.get("error") or "refused without a reason"))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
