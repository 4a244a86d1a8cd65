"""Serial ingest: one reader thread per port, one writer thread for the outbox.

A reader decodes frames and validates records, then queues them; the writer
commits them in batches (group commit) and only then sends each tracker an
ACK with its highest contiguous durable seq. A port that goes away (a USB
unplug) is reopened with backoff; the tracker resends what was not ACKed.
"""

from __future__ import annotations

import logging
import os
import queue
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
    RecordError,
    RejectedFrame,
    StreamDecoder,
    encode_frame,
    validate_record,
)
from firmware_shim._records import decode_datum, split_soe
from gateway._outbox import AcceptedRecord, Outbox, QuarantinedFrame
from gateway.errors import GatewayError

__all__ = ["PortReader", "IngestWriter", "PortState", "IngestStats"]

# Known limit: all of ingest shares one core (the GIL). benchmarks/gateway_ingest.py
# measures ~11,700 records/s from 16 flooding ports on a 2-core machine, about
# 90 µs of CPU a record: fastavro's decode of one record is ~23 µs, frame
# decoding ~8 µs, validation ~4 µs, the commit ~13 µs, and sixteen reader
# threads contending for the GIL cost ~30 µs more. A gym's tens of trackers
# at serial rates need a few thousand records/s, so this is ample there; the
# 20,000/s goal needs one selector loop instead of a thread per port, and
# decoding in worker processes.

log = logging.getLogger(__name__)

#: Reads waiting for the writer (each a list of the frames of one read, up
#: to ~30). 2,000 is seconds of input at full speed: enough to ride out a
#: slow fsync, small enough (tens of MB) to bound memory. When full, readers
#: block, the serial buffers fill and trackers slow down.
INGEST_QUEUE_MAX_ITEMS = 2_000
#: Bytes asked from the port per read; pyserial's inter_byte_timeout does
#: nothing on POSIX, so read what is waiting with a short timeout instead.
_READ_CHUNK_BYTES = 4096
_READ_TIMEOUT_S = 0.05


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


class PortReader(threading.Thread):
    """Reads one serial port, decodes frames and queues what the writer must commit."""

    def __init__(
        self,
        path: str,
        out: queue.Queue,
        *,
        baud_rate: int = 115200,
        reopen_backoff_max_s: float = 5.0,
        on_frame: Callable[[PortState, Frame], None] | None = None,
        stop_event: threading.Event,
    ) -> None:
        super().__init__(name=f"serial:{path}", daemon=True)
        self.state = PortState(path)
        self._out = out
        self._baud_rate = baud_rate
        self._backoff_max_s = reopen_backoff_max_s
        self._on_frame = on_frame
        self._stop_event = stop_event
        self._port: serial.Serial | None = None
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
        port = serial.Serial(self.state.path, self._baud_rate, timeout=_READ_TIMEOUT_S, exclusive=True)
        return port

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

    def run(self) -> None:
        decoder = StreamDecoder()
        backoff_s = 0.1
        while not self._stop_event.is_set():
            if self._port is None:
                try:
                    self._port = self._open()
                except (serial.SerialException, OSError) as exc:
                    self.state.last_error = _short(exc)
                    self._stop_event.wait(backoff_s)
                    backoff_s = min(backoff_s * 2, self._backoff_max_s)
                    continue
                self.state.state, self.state.reopen_count = "open", self.state.reopen_count + 1
                decoder = StreamDecoder()
                backoff_s = 0.1
                log.info("serial port %s reopened (device %s)", self.state.path, self.state.device_id or "unknown")
            try:
                data = self._port.read(max(1, min(self._port.in_waiting, _READ_CHUNK_BYTES)))
            except (serial.SerialException, OSError) as exc:
                log.warning("serial port %s went away (device %s): %s; reopening", self.state.path,
                            self.state.device_id or "unknown", _short(exc))
                self.state.state, self.state.last_error = "reopening", _short(exc)
                self._close_port()
                continue
            if data:
                # One queue item per read, not per frame: the queue's locking
                # costs as much as decoding a small record.
                items: list = []
                for item in decoder.feed(data):
                    self._handle(item, items)
                if items:
                    self._out.put(items)
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

    def _telemetry(self, frame: Frame) -> AcceptedRecord | QuarantinedFrame:
        path = self.state.path
        try:
            info, datum = split_soe(frame.payload)
            record = decode_datum(info, datum)
        except RecordError as exc:
            return QuarantinedFrame(path, self.state.device_id, exc.reason, exc.detail, frame.payload)
        device_id, boot_id = record["device_id"], str(record["boot_id"])
        if record["seq"] != frame.seq:
            return QuarantinedFrame(path, device_id, "seq_mismatch",
                                    f"frame seq {frame.seq} but record seq {record['seq']}", frame.payload)
        why = validate_record(record)
        if why is not None:
            return QuarantinedFrame(path, device_id, "out_of_range", why, frame.payload, boot_id, frame.seq)
        return AcceptedRecord(path, device_id, boot_id, frame.seq, record["timestamp_us"], info.fingerprint, info.version, datum, record)


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
            batch = list(first)
            deadline = time.monotonic() + self._interval_s
            while len(batch) < self._batch_max:
                remaining = deadline - time.monotonic()
                try:
                    batch += self._inbox.get(timeout=remaining) if remaining > 0 else self._inbox.get_nowait()
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
