"""Start, stop and inspect one local server, whatever it is.

A concrete server (``_rabbitmq.RabbitMQ``, ``_cassandra.Cassandra``) says how
to prepare its files, how to launch it and how to ask it a real question; this
module owns the life cycle: one pid file and one lock per server, reuse of a
server that is already up, cleanup after a stale run, and waiting until the
server answers or is really gone.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from . import _process
from ._errors import ServicesError
from ._layout import Layout

logger = logging.getLogger(__name__)

# A line of progress while a start takes long, so CI logs show it is alive.
_PROGRESS_EVERY_S = 15.0
_PROBE_PAUSE_S = 0.25
# A killed JVM can hold its sockets for a second or two while its threads exit.
_PORT_RELEASE_S = 30.0


class ManagedServer(ABC):
    """One server run by this script, on loopback, with its state under ``.state/services/<name>``."""

    name: str
    host = "127.0.0.1"
    port: int
    start_timeout_s: float
    stop_grace_s: float

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.home = layout.server_dir(self.name)
        self.log_dir = self.home / "logs"
        self.pid_file = self.home / "server.pid"
        self.lock_file = self.home / "server.lock"
        self.console_log = self.log_dir / "console.log"

    @property
    def other_ports(self) -> tuple[int, ...]:
        """Ports besides ``port`` that the server binds and that must be free."""
        return ()

    @property
    def ports(self) -> tuple[int, ...]:
        """Every port the server binds, client port first."""
        return (self.port, *self.other_ports)

    @property
    @abstractmethod
    def address(self) -> str:
        """Where clients connect, as a URL."""

    @abstractmethod
    def prepare(self) -> None:
        """Make everything the launch needs: directories, configuration, jars."""

    @abstractmethod
    def launch_command(self) -> tuple[list[str], dict[str, str]]:
        """The argv and the extra environment that start the server in the foreground."""

    @abstractmethod
    def answers(self) -> bool:
        """Ask the server a real protocol question; True if it answered."""

    @abstractmethod
    def wipe(self) -> None:
        """Delete the server's data; it must be stopped."""

    def launch_environment(self, extra: dict[str, str]) -> dict[str, str]:
        """This script's environment plus ``extra`` and the marker that tells the server is ours."""
        env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        env.update(extra)
        env[_process.MARKER_VARIABLE] = str(self.home)
        return env


@dataclass(frozen=True)
class ServerState:
    """What ``status`` reports about one server.

    Attributes:
        name: ``rabbitmq`` or ``cassandra``.
        state: ``running`` (answers), ``starting`` (process up, not answering yet) or ``stopped``.
        pid: The launched process (also its group id), or None when stopped.
        address: Where clients connect.
        log_dir: Where its logs are.
    """

    name: str
    state: str
    pid: int | None
    address: str
    log_dir: str


def find_running(server: ManagedServer) -> int | None:
    """The process group of this checkout's running server, or None.

    Trusts the pid file only if that group still has a live process started
    for this server's state directory; otherwise looks for such a process on
    the server's port (the pid file may have been lost) and adopts it.
    """
    record = _process.PidRecord.load(server.pid_file)
    if record is not None and _is_ours(server, _process.group_members(record.pid)):
        return record.pid
    for pid in _process.listening_pids(server.port):
        if _process.service_marker(pid) == str(server.home):
            pgid = os.getpgid(pid)
            if _process.runs_in_deleted_folder(pid):
                # launch() stops it: its marker names this server, like another checkout's.
                logger.warning(
                    "%s: pid %d was started for a deleted copy of %s; not adopting it",
                    server.name,
                    pgid,
                    server.home,
                )
                break
            logger.info("%s: adopting pid %d, started earlier for this checkout", server.name, pgid)
            _process.PidRecord(pid=pgid, started_at=time.time()).save(server.pid_file)
            return pgid
    server.pid_file.unlink(missing_ok=True)
    return None


def _is_ours(server: ManagedServer, pids: list[int]) -> bool:
    return any(_process.service_marker(pid) == str(server.home) for pid in pids)


def launch(server: ManagedServer) -> tuple[int, bool]:
    """Launch ``server`` unless it already runs.

    Returns:
        The process group id, and True if it was already running.

    Raises:
        ServicesError: A port it needs is held by a process that is not ours.
    """
    with _process.exclusive_lock(server.lock_file):
        running = find_running(server)
        if running is not None:
            return running, True
        _clear_ports(server)
        server.prepare()
        server.log_dir.mkdir(parents=True, exist_ok=True)
        argv, extra_env = server.launch_command()
        with open(server.console_log, "ab") as console:
            console.write(f"--- launched by pulsegate-services at {time.ctime()}\n".encode())
            console.flush()
            child = subprocess.Popen(  # noqa: S603 - argv is built here, not from input
                argv,
                cwd=server.home,
                env=server.launch_environment(extra_env),
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _process.PidRecord(pid=child.pid, started_at=time.time()).save(server.pid_file)
        logger.debug("%s: launched pid %d: %s", server.name, child.pid, " ".join(argv))
        # Deliberately not waited on: the server outlives this script.
        return child.pid, False


def _clear_ports(server: ManagedServer) -> None:
    """Free the server's ports of leftovers from another checkout; refuse anything else."""
    for port in server.ports:
        for pid in _process.listening_pids(port):
            marker = _process.service_marker(pid)
            if marker and Path(marker).name == server.name:
                logger.warning(
                    "%s: port %d is held by pid %d started for another checkout (%s); stopping it",
                    server.name,
                    port,
                    pid,
                    marker,
                )
                _process.terminate_group(os.getpgid(pid), server.stop_grace_s)
                continue
            raise ServicesError(
                f"{server.name} needs port {port}, but pid {pid} holds it "
                f"({_process.command_line(pid)[:100]!r}); stop that process, then run start again"
            )
    _wait_for_ports_to_close(server)


def _wait_for_ports_to_close(server: ManagedServer) -> None:
    """Wait out sockets still bound by a process that is dying (owner no longer readable)."""
    if not _process.wait_until(
        lambda: not any(map(_process.is_listening, server.ports)), _PORT_RELEASE_S
    ):
        busy = [port for port in server.ports if _process.is_listening(port)]
        raise ServicesError(
            f"{server.name}: port {busy[0]} is still bound {_PORT_RELEASE_S:.0f} s after its owner died; "
            "try again in a minute"
        )


def wait_until_answering(server: ManagedServer, pgid: int, timeout_s: float) -> float:
    """Block until ``server`` answers a real query.

    Returns:
        Seconds waited.

    Raises:
        ServicesError: The server exited, or did not answer within ``timeout_s``.
    """
    started = time.monotonic()
    next_progress = started + _PROGRESS_EVERY_S
    while True:
        if _process.port_is_open(server.host, server.port) and server.answers():
            return time.monotonic() - started
        now = time.monotonic()
        if not _process.group_members(pgid):
            server.pid_file.unlink(missing_ok=True)
            raise ServicesError(f"{server.name} exited while starting: {_last_words(server)}")
        if now - started > timeout_s:
            raise ServicesError(
                f"{server.name} did not answer at {server.address} within {timeout_s:.0f} s "
                f"(pid {pgid} still running; logs in {server.log_dir})"
            )
        if now >= next_progress:
            logger.info("%s: still starting (%.0f s so far)", server.name, now - started)
            next_progress = now + _PROGRESS_EVERY_S
        time.sleep(_PROBE_PAUSE_S)


# Erlang's logger prefix, "2026-12-04 16:28:49.267447+00:00 [error] <0.132.0> ".
_ERLANG_LOG_PREFIX = re.compile(r"^\S+ \S+ \[\w+\] <[\d.]+> ?")
# The lines that say why a server died, best first: RabbitMQ's boot failure,
# the JVM's own errors, an exception, then any error line.
_CAUSE_PATTERNS = (
    re.compile(r"\bERROR: "),
    re.compile(r"^Error occurred|^Exception in thread|\bException: "),
    re.compile(r"\b(ERROR|error|Error)\b"),
)


def _last_words(server: ManagedServer) -> str:
    """The most telling line of the console log of a server that just died."""
    lines = [
        _ERLANG_LOG_PREFIX.sub("", line).strip()
        for line in _process.tail_lines(server.console_log, 60)
    ]
    lines = [line for line in lines if line and not line.startswith("--- launched by")]
    for pattern in _CAUSE_PATTERNS:
        causes = [line for line in lines if pattern.search(line)]
        if causes:
            return f"{causes[-1][:200]} (logs in {server.log_dir})"
    last = lines[-1] if lines else "(no output)"
    return f"{last[:200]} (logs in {server.log_dir})"


def stop(server: ManagedServer, *, hard: bool = False) -> tuple[bool, float]:
    """Stop ``server`` and wait until it and its ports are gone.

    Args:
        server: The server to stop.
        hard: SIGKILL at once, as a crash would (for fault-injection tests).

    Returns:
        Whether it was running, and how long stopping took in seconds.

    Raises:
        ServicesError: Its port is still held after the process group died.
    """
    with _process.exclusive_lock(server.lock_file):
        started = time.monotonic()
        pgid = find_running(server)
        if pgid is None:
            return False, 0.0
        graceful = _process.terminate_group(pgid, server.stop_grace_s, hard=hard)
        if not graceful and not hard:
            logger.warning(
                "%s: did not stop within %.0f s; killed it", server.name, server.stop_grace_s
            )
        server.pid_file.unlink(missing_ok=True)
        _wait_for_ports_to_close(server)
        return True, time.monotonic() - started


def state_of(server: ManagedServer) -> ServerState:
    """Report whether ``server`` runs and answers."""
    pgid = find_running(server)
    if pgid is None:
        state = "stopped"
    elif _process.port_is_open(server.host, server.port) and server.answers():
        state = "running"
    else:
        state = "starting"
    return ServerState(
        name=server.name, state=state, pid=pgid, address=server.address, log_dir=str(server.log_dir)
    )
