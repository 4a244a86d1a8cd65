"""Serial ingest: one thread reads every port, one writer thread commits to the outbox.

The port loop splits each port's bytes into frames; TELEMETRY payloads are
decoded and validated in worker processes (see :mod:`gateway._decode_pool`)
or, with ``serial.decode_workers = 0``, in the loop itself. The writer
commits the records in batches (group commit) and only then sends each
tracker an ACK with its highest contiguous durable seq. A port that goes
away (a USB unplug) is reopened with backoff; the tracker resends what was
not ACKed.
"""

from __future__ import annotations

import logging
import os
import queue
import selectors
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import serial

from firmware_shim import (
    Ack,
    Frame,
    FrameError,
    FrameType,
    Hello,
    RejectedFrame,
    StreamDecoder,
    encode_frame,
)
from gateway._decode_pool import DecodeJob, DecodePool, PendingRecord, check_payload, items_for
from gateway._outbox import AcceptedRecord, Outbox, QuarantinedFrame
from gateway.errors import GatewayError

__all__ = ["PortReader", "PortLoop", "IngestWriter", "PortState", "IngestStats"]

# Throughput: benchmarks/gateway_ingest.py measures ~23,000-24,000 records/s
# from 16 flooding ports on an idle 2-core machine with one decode worker,
# against ~16,700 with decoding in the loop's thread. Each record still costs the
# daemon's own process ~40 µs of CPU (frame splitting, the commit, cue
# sources): with more cores, that process becomes the limit, not the workers.

log = logging.getLogger(__name__)

#: Rounds of the port loop waiting for the writer (each a list of the frames
#: read from every ready port, up to ~30 per port). 64 rounds of 16 busy
#: ports is ~30,000 records, over a second of input at full speed: enough to
#: ride out a slow fsync, small enough (~50 MB) to bound memory. When full,
#: the loop blocks, the serial buffers fill and trackers slow down.
INGEST_QUEUE_MAX_ITEMS = 64
#: Bytes asked from a ready port per read: more than a pseudo-terminal or a
#: USB serial driver buffers, so one read takes all that is waiting.
_READ_CHUNK_BYTES = 65536
#: Longest sleep of the port loop when nothing is readable: how soon it
#: notices the stop flag and a closed port's reopen time.
_SELECT_TIMEOUT_S = 0.05
_FIRST_REOPEN_BACKOFF_S = 0.1


class PortMissingError(GatewayError):
    """A serial port named on the command line or in the config does not exist."""


@dataclass
class PortState:
    """What the gateway knows about one serial port, for status and the UI."""

    path: str
    state: str = "closed"  #: open, reopening, closed
    device_id: str | None = None
    boot_id: str | None = None
    firmware_version: str | None = None
    frames: int = 0
    rejected: int = 0
    last_frame_at: float | None = None
    last_error: str | None = None
    reopen_count: int = 0
    writes_dropped: int = 0  #: ACK or CUE frames the tracker's full line refused


@dataclass
class IngestStats:
    """Counters shared by the ingest threads (updated under the GIL)."""

    records_committed: int = 0
    duplicates: int = 0
    quarantined: int = 0
    commits: int = 0
    commit_seconds: float = 0.0
    #: (unix time, records committed) once a second for the records/s sparkline; capped.
    history: list[tuple[float, int]] = field(default_factory=list)


class PortReader:
    """One serial port: opens it, decodes what it sends, writes ACKs and cues to it.

    Not a thread: one :class:`PortLoop` thread reads every port. Sixteen
    reader threads spent more CPU handing the GIL to each other than on
    decoding.
    """

    def __init__(
        self,
        path: str,
        *,
        baud_rate: int = 115200,
        reopen_backoff_max_s: float = 5.0,
        on_frame: Callable[[PortState, Frame], None] | None = None,
        defer_decode: bool = False,
    ) -> None:
        self.state = PortState(path)
        #: True when a DecodePool decodes this port's records (PortLoop sets it).
        self.defer_decode = defer_decode
        self._baud_rate = baud_rate
        self._backoff_max_s = reopen_backoff_max_s
        self._backoff_s = _FIRST_REOPEN_BACKOFF_S
        self._next_open_at = 0.0  #: monotonic time of the next reopen attempt
        self._on_frame = on_frame
        self._port: serial.Serial | None = None
        self._decoder = StreamDecoder()
        self._write_lock = threading.Lock()

    def open_first(self) -> None:
        """Open the port once at start-up; a missing port is a configuration error."""
        try:
            self._port = self._open()
        except serial.SerialException as exc:
            raise PortMissingError(
                f"cannot open serial port {self.state.path!r}: {_short(exc)}; check the cable and the path (ls /dev/serial/by-id/)"
            ) from None
        self.state.state = "open"

    def _open(self) -> serial.Serial:
        # timeout=0: pyserial opens the descriptor non-blocking and leaves it
        # so; the loop reads it with os.read when the selector says it is ready.
        return serial.Serial(self.state.path, self._baud_rate, timeout=0, exclusive=True)

    def fileno(self) -> int | None:
        """The open port's descriptor, or None while it is closed."""
        port = self._port
        return None if port is None else port.fileno()

    def reopen_if_due(self, now_s: float) -> float | None:
        """Try to reopen a closed port when its backoff has passed.

        Returns:
            Seconds until the next attempt while still closed, else None.
        """
        if self._port is not None:
            return None
        if now_s < self._next_open_at:
            return self._next_open_at - now_s
        try:
            port = self._open()
        except (serial.SerialException, OSError) as exc:
            self.state.last_error = _short(exc)
            self._next_open_at = now_s + self._backoff_s
            self._backoff_s = min(self._backoff_s * 2, self._backoff_max_s)
            return self._next_open_at - now_s
        with self._write_lock:
            self._port = port
        self.state.state, self.state.reopen_count = "open", self.state.reopen_count + 1
        self._decoder = StreamDecoder()
        self._backoff_s = _FIRST_REOPEN_BACKOFF_S
        log.info("serial port %s reopened (device %s)", self.state.path, self.state.device_id or "unknown")
        return None

    def send(self, wire: bytes) -> bool:
        """Write a frame to the tracker; False if the port is not open."""
        with self._write_lock:
            port = self._port
            if port is None:
                return False
            # Straight to the (non-blocking) descriptor: pyserial's write()
            # spins while the line is full, and a tracker that stops reading
            # must not stall the outbox writer. A dropped ACK is harmless (the
            # next one carries a newer seq); a dropped cue is resent.
            try:
                written = os.write(port.fileno(), wire)
            except BlockingIOError:
                self.state.writes_dropped += 1
                return False
            except (serial.SerialException, OSError) as exc:
                log.debug("write to %s failed: %s", self.state.path, exc)
                return False
            if written < len(wire):
                self.state.writes_dropped += 1
                return False
            return True

    def read_into(self, out: list) -> bool:
        """Read what the port holds and append what it decodes to ``out``.

        Returns:
            False when the port went away (it is then closed, to be reopened).
        """
        fd = self.fileno()
        try:
            data = os.read(fd, _READ_CHUNK_BYTES) if fd is not None else b""
        except BlockingIOError:
            return True
        except OSError as exc:
            return self._went_away(_short(exc))
        if not data:  # readable with nothing to read: the other end hung up
            return self._went_away("the device hung up (end of file)")
        for item in self._decoder.feed(data):
            self._handle(item, out)
        return True

    def _went_away(self, why: str) -> bool:
        log.warning("serial port %s went away (device %s): %s; reopening", self.state.path,
                    self.state.device_id or "unknown", why)
        self.state.state, self.state.last_error = "reopening", why
        self._close_port()
        self._next_open_at = time.monotonic() + self._backoff_s
        return False

    def close(self) -> None:
        self._close_port()
        self.state.state = "closed"

    def _close_port(self) -> None:
        with self._write_lock:
            if self._port is not None:
                try:
                    self._port.close()
                except (serial.SerialException, OSError):
                    pass
                self._port = None

    def _handle(self, item: Frame | RejectedFrame, out: list) -> None:
        state = self.state
        if isinstance(item, RejectedFrame):
            state.rejected += 1
            out.append(QuarantinedFrame(state.path, state.device_id, item.reason, item.detail, item.raw))
            return
        state.frames += 1
        state.last_frame_at = time.time()
        if item.type is FrameType.TELEMETRY:
            out.append(self._telemetry(item))
        elif item.type is FrameType.HELLO:
            self._hello(item, out)
        elif self._on_frame is not None:
            self._on_frame(state, item)

    def _hello(self, frame: Frame, out: list) -> None:
        try:
            hello = Hello.from_payload(frame.payload)
        except FrameError as exc:
            out.append(QuarantinedFrame(self.state.path, self.state.device_id, exc.reason, exc.detail, frame.payload))
            return
        if (hello.device_id, str(hello.boot_id)) != (self.state.device_id, self.state.boot_id):
            log.info("tracker %s (boot %s, firmware %s) on %s", hello.device_id, hello.boot_id,
                     hello.firmware_version, self.state.path)
        self.state.device_id, self.state.boot_id = hello.device_id, str(hello.boot_id)
        self.state.firmware_version = hello.firmware_version
        # Tell the tracker at once what is durable, so after a gateway restart
        # it resends only what is missing.
        out.append(("hello", self.state.path, hello.device_id, str(hello.boot_id)))

    def _telemetry(self, frame: Frame) -> AcceptedRecord | QuarantinedFrame | PendingRecord:
        pending = PendingRecord(self.state.path, self.state.device_id, frame.seq, frame.payload)
        if self.defer_decode:
            return pending  # a decode worker gives the verdict (see PortLoop)
        return items_for(pending, check_payload(frame.seq, frame.payload))


class PortLoop(threading.Thread):
    """Reads every serial port from one thread: a selector over their descriptors.

    Each round hands the writer one queue item with every frame decoded from
    every port that was ready, and reopens closed ports whose backoff passed.
    """

    def __init__(
        self,
        readers: dict[str, PortReader],
        out: queue.Queue,
        *,
        stop_event: threading.Event,
        decode_pool: DecodePool | None = None,
    ) -> None:
        super().__init__(name="serial-ports", daemon=True)
        self._readers = readers
        self._out = out
        self._stop_event = stop_event
        self._decode_pool = decode_pool
        for reader in readers.values():
            reader.defer_decode = decode_pool is not None

    def run(self) -> None:
        selector = selectors.DefaultSelector()
        registered: dict[PortReader, int] = {}
        try:
            while not self._stop_event.is_set():
                timeout_s = self._sync(selector, registered)
                items: list = []
                for key, _ in selector.select(timeout_s):
                    reader = key.data
                    if not reader.read_into(items):
                        selector.unregister(key.fd)
                        del registered[reader]
                if items:
                    self._out.put(self._decode_pool.submit(items) if self._decode_pool is not None else items)
        finally:
            selector.close()
            for reader in self._readers.values():
                reader.close()

    def _sync(self, selector: selectors.BaseSelector, registered: dict[PortReader, int]) -> float:
        """Reopen due ports and (re)register descriptors; return how long select may wait."""
        now_s = time.monotonic()
        timeout_s = _SELECT_TIMEOUT_S
        for reader in self._readers.values():
            wait_s = reader.reopen_if_due(now_s)
            if wait_s is not None:
                timeout_s = min(timeout_s, wait_s)
            fd = reader.fileno()
            if registered.get(reader) != fd:
                if reader in registered:
                    selector.unregister(registered.pop(reader))
                if fd is not None:
                    selector.register(fd, selectors.EVENT_READ, reader)
                    registered[reader] = fd
        return max(timeout_s, 0.0)


def _resolved(item: list | DecodeJob) -> list:
    return item.resolve() if isinstance(item, DecodeJob) else list(item)


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class IngestWriter(threading.Thread):
    """Commits queued records in batches, then ACKs each tracker."""

    def __init__(
        self,
        outbox: Outbox,
        inbox: queue.Queue,
        readers: dict[str, PortReader],
        *,
        commit_interval_ms: int = 20,
        batch_max_records: int = 5000,
        stop_event: threading.Event,
        on_commit: Callable[[list[AcceptedRecord]], None] | None = None,
    ) -> None:
        super().__init__(name="outbox-writer", daemon=True)
        self.outbox = outbox
        self.stats = IngestStats()
        self._inbox = inbox
        self._readers = readers
        self._interval_s = commit_interval_ms / 1000
        self._batch_max = batch_max_records
        self._stop_event = stop_event
        self._on_commit = on_commit

    def run(self) -> None:
        while not (self._stop_event.is_set() and self._inbox.empty()):
            try:
                first = self._inbox.get(timeout=0.2)
            except queue.Empty:
                self._tick_history()
                continue
            batch = _resolved(first)
            deadline = time.monotonic() + self._interval_s
            while len(batch) < self._batch_max:
                remaining = deadline - time.monotonic()
                try:
                    batch += _resolved(self._inbox.get(timeout=remaining) if remaining > 0 else self._inbox.get_nowait())
                except queue.Empty:
                    break
            self._commit(batch)
            self._tick_history()

    def _commit(self, batch: list) -> None:
        records = [i for i in batch if isinstance(i, AcceptedRecord)]
        rejected = [i for i in batch if isinstance(i, QuarantinedFrame)]
        hellos = [i for i in batch if isinstance(i, tuple)]
        started = time.perf_counter()
        while True:
            try:
                result = self.outbox.commit_batch(records, rejected)
                break
            except Exception as exc:  # sqlite3.Error, disk full: keep the batch, nothing is ACKed
                log.error("outbox commit failed, retrying in 1 s (nothing was ACKed): %s", exc)
                if self._stop_event.wait(1.0) and self._stop_event.is_set():
                    log.error("shutting down with %d uncommitted records; trackers will resend them", len(records))
                    return
        stats = self.stats
        stats.commit_seconds += time.perf_counter() - started
        stats.commits += 1
        stats.records_committed += result.inserted
        stats.duplicates += result.duplicates
        stats.quarantined += result.quarantined
        acks = dict(result.acks)
        for _, path, device_id, boot_id in hellos:
            acks[(path, boot_id)] = self.outbox.contiguous_seq(device_id, boot_id)
        for (path, boot_id), seq in acks.items():
            reader = self._readers.get(path)
            if reader is not None:
                reader.send(encode_frame(FrameType.ACK, 0, Ack(uuid.UUID(boot_id), seq).to_payload()))
        if self._on_commit is not None and records:
            try:
                self._on_commit(records)
            except Exception:  # a cue source's bug must never stop the outbox writer
                log.exception("post-commit hook failed; records are committed and ACKed")

    def _tick_history(self) -> None:
        history = self.stats.history
        now = time.time()
        if not history or now - history[-1][0] >= 1.0:
            history.append((now, self.stats.records_committed))
            # Two minutes of per-second points: what the sparkline shows.
            del history[:-120]
