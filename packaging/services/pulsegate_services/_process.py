"""Processes, pid files, ports and locks: the mechanics under every server.

Servers are launched in their own session (so their process group id equals
the launcher's pid) with ``PULSEGATE_SERVICE_HOME`` in their environment. That
variable is inherited by every child (the Erlang VM under RabbitMQ's shell
wrapper, the JVM), so a process found holding a port can be told apart as ours,
another checkout's, or someone else's by reading ``/proc/<pid>/environ``.

Nothing here waits on a child: this script exits right after a start, so the
servers are reaped by init. Some container inits never reap, which leaves
zombies that ``kill(pid, 0)`` still reports; liveness is therefore read from
``/proc/<pid>/stat`` and a zombie counts as gone.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

MARKER_VARIABLE = "PULSEGATE_SERVICE_HOME"
_PROC = Path("/proc")
_TCP_LISTEN_STATE = "0A"
_POLL_INTERVAL_S = 0.1


@dataclass(frozen=True)
class PidRecord:
    """What a pid file holds about a launched server.

    Attributes:
        pid: The launched process; also its process group id.
        started_at: Wall-clock start time, seconds since the epoch.
    """

    pid: int
    started_at: float

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)), encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> PidRecord | None:
        """Read ``path``; a missing or unreadable file means no record."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(pid=int(data["pid"]), started_at=float(data["started_at"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = (_PROC / str(pid) / "stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # The command name (field 2) is parenthesised and may hold spaces.
    return raw[raw.rindex(")") + 2 :].split()


def is_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def group_members(pgid: int) -> list[int]:
    """Live processes whose process group is ``pgid``."""
    members = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def service_marker(pid: int) -> str | None:
    """The ``PULSEGATE_SERVICE_HOME`` a process was started with, if any."""
    try:
        environ = (_PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return None
    prefix = MARKER_VARIABLE.encode() + b"="
    for item in environ.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix) :].decode(errors="replace")
    return None


def runs_in_deleted_folder(pid: int) -> bool:
    """Whether the folder ``pid`` was started in has been deleted under it.

    Servers start in their state directory. A checkout removed while its
    servers run leaves them working on files that are gone; a new checkout
    at the same path must not adopt them (the kernel marks such a cwd).
    """
    try:
        return os.readlink(_PROC / str(pid) / "cwd").endswith(" (deleted)")
    except OSError:
        return False


def command_line(pid: int) -> str:
    """The command line of ``pid``, for messages; empty if it is gone."""
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def _listening_inodes(port: int) -> set[str]:
    """Socket names (``socket:[inode]``) listening on TCP ``port``, from /proc/net."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (_PROC / "net" / table).read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == _TCP_LISTEN_STATE:
                inodes.add(f"socket:[{fields[9]}]")
    return inodes


def is_listening(port: int) -> bool:
    """True if any socket listens on TCP ``port``.

    Unlike ``listening_pids`` this also sees a socket whose owner is dying:
    a killed JVM lingers as a zombie thread-group leader, its fds unreadable,
    while its other threads exit, and its sockets stay bound until the last goes.
    """
    return bool(_listening_inodes(port))


def listening_pids(port: int) -> list[int]:
    """Processes holding a TCP socket listening on ``port`` (any address)."""
    inodes = _listening_inodes(port)
    if not inodes:
        return []
    return [pid for pid in _all_pids() if _holds_any(pid, inodes)]


def _all_pids() -> Iterator[int]:
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            yield int(entry.name)


def _holds_any(pid: int, socket_names: set[str]) -> bool:
    try:
        fds = list((_PROC / str(pid) / "fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd) in socket_names:
                return True
        except OSError:
            continue
    return False


def port_is_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True if a TCP connection to ``host:port`` is accepted."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def terminate_group(pgid: int, grace_s: float, *, hard: bool = False) -> bool:
    """Stop every process of group ``pgid`` and wait until all are gone.

    SIGTERM goes to the group leader, which forwards it (RabbitMQ's wrapper)
    or is the server itself (the JVM); if anything is left after ``grace_s``,
    the whole group gets SIGKILL.

    Args:
        pgid: Process group id (the pid the script launched).
        grace_s: How long a graceful shutdown may take.
        hard: Skip the graceful part and SIGKILL at once (a crash, for fault tests).

    Returns:
        True if the group went down gracefully, False if it had to be killed.
    """
    if not hard:
        _signal_pid(pgid, signal.SIGTERM)
        if wait_until(lambda: not group_members(pgid), grace_s):
            return True
    _signal_group(pgid, signal.SIGKILL)
    wait_until(lambda: not group_members(pgid), 10.0)
    return hard


def _signal_pid(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except OSError as error:
        if error.errno != errno.ESRCH:
            raise


def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``condition`` until it is true or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_INTERVAL_S)


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an advisory lock on ``path`` so concurrent starts/stops of one server serialize."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def tail_lines(path: Path, count: int) -> list[str]:
    """The last ``count`` lines of a text file; none if it is missing."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            # Enough for a few stack-trace lines without reading a whole log.
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except OSError:
        return []
    return text.splitlines()[-count:]
