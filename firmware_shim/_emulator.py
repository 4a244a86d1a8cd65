"""The tracker emulator: replays a recording over a serial port like real firmware.

It frames each sample as a TELEMETRY record and keeps every record until the
gateway ACKs it. Lost frames are recovered go-back-N style: after two
duplicate ACKs, or when no ACK progress came for ``rto_s``, it announces
itself again (HELLO) and resends from the first unACKed record. Records of a
previous boot survive a reboot and are resent with their original ids, as
firmware that keeps them in flash would.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import pty
import random
import select
import time
import tty
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import serial

from firmware_shim._frames import (
    Ack,
    Cue,
    FrameError,
    FrameType,
    Hello,
    StreamDecoder,
    encode_frame,
)
from firmware_shim._recordings import Recording
from firmware_shim._records import LATEST_SCHEMA_VERSION, encode_record, schema
from firmware_shim.errors import ShimError

__all__ = ["TrackerEmulator", "PtyLink", "SerialPortLink", "ReplayResult"]

log = logging.getLogger(__name__)

FIRMWARE_VERSION = "pulsegate-shim-emulator/1"
#: Bytes queued for the port at once; the kernel's tty buffer is smaller, so
#: this only bounds how far ahead of the port the emulator encodes.
_OUT_BUFFER_BYTES = 64 * 1024


class SerialLink(Protocol):
    """The emulator's side of a serial line: non-blocking reads and writes on a file descriptor."""

    def fileno(self) -> int: ...
    def write(self, data: bytes) -> int: ...
    def read(self) -> bytes: ...
    def close(self) -> None: ...


class PtyLink:
    """A pseudo-terminal whose far end is published at ``link_path`` (a symlink).

    The gateway opens ``link_path`` with pyserial as it would a USB serial
    adapter. ``unplug()`` closes the terminal, as pulling the cable does, and
    ``replug()`` makes a new one behind the same path, as udev's
    ``/dev/serial/by-id`` links behave.
    """

    def __init__(self, link_path: str | Path) -> None:
        self.link_path = Path(link_path)
        if not self.link_path.parent.is_dir():
            raise ShimError(f"cannot create {str(self.link_path)!r}: folder {str(self.link_path.parent)!r} does not exist")
        # Replace only a link to a terminal (a leftover of an earlier replay),
        # never a file or folder someone keeps there.
        if self.link_path.is_symlink():
            if not os.readlink(self.link_path).startswith("/dev/pts/"):
                raise ShimError(f"{str(self.link_path)!r} is a link to something other than a terminal; "
                                "choose another --create-pty path")
        elif self.link_path.exists():
            raise ShimError(f"{str(self.link_path)!r} already exists; choose another --create-pty path")
        self._master = -1
        self._slave = -1
        self.replug()

    def replug(self) -> None:
        master, slave = pty.openpty()
        # Raw at once: with the default line discipline the terminal would
        # echo our own frames back to us until the gateway opens it.
        tty.setraw(slave)
        os.set_blocking(master, False)
        # Keep our own handle on the far end, so the terminal stays up (and
        # buffers) while no gateway has it open.
        self._master, self._slave = master, slave
        tmp = self.link_path.with_name(self.link_path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, self.link_path)

    def unplug(self) -> None:
        self.link_path.unlink(missing_ok=True)
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1

    def fileno(self) -> int:
        return self._master

    def write(self, data: bytes) -> int:
        try:
            return os.write(self._master, data)
        except BlockingIOError:
            return 0

    def read(self) -> bytes:
        try:
            return os.read(self._master, 65536)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError as exc:
            if exc.errno == errno.EIO:  # no reader on the far end right now
                return b""
            raise

    def close(self) -> None:
        self.unplug()


class SerialPortLink:
    """A real serial device, e.g. a USB adapter wired to the gateway."""

    def __init__(self, path: str, baud_rate: int = 115200) -> None:
        try:
            self._port = serial.Serial(path, baud_rate, timeout=0, write_timeout=0)
        except serial.SerialException as exc:
            raise ShimError(f"cannot open serial port {path!r}: {exc}") from None

    def fileno(self) -> int:
        return self._port.fileno()

    def write(self, data: bytes) -> int:
        try:
            return self._port.write(data) or 0
        except serial.SerialTimeoutException:
            return 0

    def read(self) -> bytes:
        return self._port.read(self._port.in_waiting or 1)

    def close(self) -> None:
        self._port.close()


@dataclass
class ReplayResult:
    """How a replay went."""

    records: int = 0
    acked: int = 0
    frames_sent: int = 0
    retransmissions: int = 0
    corrupted: int = 0
    cues: int = 0
    boots: int = 1
    seconds: float = 0.0
    complete: bool = False


@dataclass
class _Pending:
    boot_id: uuid.UUID
    seq: int
    wire: bytes


class TrackerEmulator:
    """Replays one recording as one tracker."""

    def __init__(
        self,
        recording: Recording,
        link: SerialLink,
        *,
        device_id: str | None = None,
        speed: float | None = None,
        noise_rate: float = 0.0,
        reboot_after: int | None = None,
        unplug_after: int | None = None,
        schema_version: int = LATEST_SCHEMA_VERSION,
        window: int = 1024,
        rto_s: float = 1.0,
        cue_log: Path | None = None,
        seed: int | None = None,
    ) -> None:
        if noise_rate < 0 or noise_rate >= 1:
            raise ShimError(f"--noise must be in [0, 1), got {noise_rate}")
        self.recording = recording
        self.link = link
        self.device_id = device_id or recording.device_id
        self.speed = speed
        self.noise_rate = noise_rate
        self.reboot_after = reboot_after
        self.unplug_after = unplug_after
        self.schema_version = schema_version
        self.window = window
        self.rto_s = rto_s
        self.cue_log = cue_log
        self.result = ReplayResult(records=len(recording.samples))
        self._rng = random.Random(seed)
        self._boot_id = uuid.uuid4()
        self._boot_started = time.monotonic()
        self._next_seq = 1
        self._next_sample = 0
        self._pending: deque[_Pending] = deque()
        self._send_index = 0
        self._out = bytearray()
        self._decoder = StreamDecoder()
        self._last_progress = time.monotonic()
        self._last_ack: tuple[uuid.UUID, int] | None = None
        self._dup_acks = 0
        self._recovery_seq = 0
        self._out_mid_frame = False
        self._connected = False
        #: Ids of cues already played, to recognise resends; 64 covers any
        #: retry window many times over.
        self._played_cues: deque[int] = deque(maxlen=64)

    # --- records -------------------------------------------------------------

    def _record(self, index: int) -> dict[str, Any]:
        sample = self.recording.samples[index]
        first_ts = self.recording.samples[0]["timestamp_us"]
        elapsed_s = max(0.0, (sample["timestamp_us"] - first_ts) / 1e6)
        uptime_s = int(time.monotonic() - self._boot_started)
        record = dict(sample)
        record.update(
            device_id=self.device_id,
            boot_id=str(self._boot_id),
            seq=self._next_seq,
            sport=self.recording.sport,
            # The tracker's own state, which a recording does not hold: the
            # battery drains 1 % per 6 minutes of workout, the XP host idles.
            battery_pct=max(5, 100 - int(elapsed_s // 360)),
            host={
                "uptime_s": uptime_s,
                "cpu_load": round(0.25 + 0.15 * math.sin(elapsed_s / 60), 3),
                "free_memory_bytes": 256 * 1024 * 1024 - (index % 1024) * 4096,
            },
        )
        if self.schema_version < 2:
            for name in ("rr_intervals_ms", "respiration_rate_bpm", "sport"):
                record.pop(name, None)
        return record

    def _produce(self, now: float, started: float) -> None:
        samples = self.recording.samples
        while self._next_sample < len(samples) and len(self._pending) < self.window:
            if self.speed is not None:
                offset_s = (samples[self._next_sample]["timestamp_us"] - samples[0]["timestamp_us"]) / 1e6
                if started + offset_s / self.speed > now:
                    break
            payload = encode_record(self._record(self._next_sample), self.schema_version)
            wire = encode_frame(FrameType.TELEMETRY, self._next_seq, payload)
            self._pending.append(_Pending(self._boot_id, self._next_seq, wire))
            self._next_seq += 1
            self._next_sample += 1

    # --- the line ------------------------------------------------------------

    def _hello(self) -> bytes:
        hello = Hello(self.device_id, self._boot_id, schema(self.schema_version).fingerprint, FIRMWARE_VERSION)
        return encode_frame(FrameType.HELLO, 0, hello.to_payload())

    def _rewind(self, why: str, *, line_lost: bool = False) -> None:
        if self._send_index:
            self.result.retransmissions += self._send_index
            log.debug("%s: resending from seq %s (%s)", self.device_id,
                      self._pending[0].seq if self._pending else "-", why)
        # Frames already sent will be ACKed in the next moments; duplicate
        # ACKs before then say nothing new, so they must not trigger another
        # rewind (TCP's fast recovery works the same way).
        self._recovery_seq = self._pending[self._send_index - 1].seq if self._send_index else 0
        self._send_index = 0
        # Finish the frame the port is in the middle of, so the gateway does
        # not see a frame cut short; drop the rest.
        if self._out_mid_frame:
            del self._out[self._out.find(0) + 1 :]
        else:
            self._out.clear()
        self._out += self._hello()
        self._last_progress = time.monotonic()
        self._dup_acks = 0
        if line_lost:
            # Like firmware after a timeout: only HELLO until the gateway
            # answers, so a dead line is not flooded with records.
            self._connected = False

    def _fill_out(self) -> None:
        if not self._connected:
            return
        while self._send_index < len(self._pending) and len(self._out) < _OUT_BUFFER_BYTES:
            wire = self._pending[self._send_index].wire
            self._send_index += 1
            self.result.frames_sent += 1
            if self.noise_rate and self._rng.random() < self.noise_rate:
                wire = self._corrupt(wire)
                self.result.corrupted += 1
            self._out += wire

    def _corrupt(self, wire: bytes) -> bytes:
        damaged = bytearray(wire)
        if self._rng.random() < 0.5:
            # A flipped bit somewhere before the delimiter.
            i = self._rng.randrange(len(damaged) - 1)
            damaged[i] ^= 1 << self._rng.randrange(8)
            return bytes(damaged)
        # Line noise in front of the frame (with a stray delimiter at times)
        # and the frame's tail cut off.
        garbage = bytes(self._rng.randrange(256) for _ in range(self._rng.randrange(1, 24)))
        return garbage + bytes(damaged[: self._rng.randrange(1, len(damaged))]) + b"\x00"

    def _on_ack(self, ack: Ack) -> None:
        self._connected = True
        removed = removed_sent = 0
        if self._pending and self._pending[0].boot_id == ack.boot_id:
            while self._pending and self._pending[0].boot_id == ack.boot_id and self._pending[0].seq <= ack.seq:
                self._pending.popleft()
                removed += 1
            removed_sent = min(removed, self._send_index)
        elif any(p.boot_id == ack.boot_id for p in self._pending):
            # After a reboot the previous boot's records come first; this ACK
            # is for the new boot's, further back in the queue.
            kept: deque[_Pending] = deque()
            for i, p in enumerate(self._pending):
                if p.boot_id == ack.boot_id and p.seq <= ack.seq:
                    removed += 1
                    removed_sent += i < self._send_index
                else:
                    kept.append(p)
            self._pending = kept
        if removed:
            self.result.acked += removed
            self._send_index -= removed_sent
            self._last_progress = time.monotonic()
            self._dup_acks = 0
        elif (ack.boot_id, ack.seq) == self._last_ack and self._send_index > 0 and ack.seq >= self._recovery_seq:
            self._dup_acks += 1
            if self._dup_acks >= 2:
                self._rewind("duplicate ACKs")
        self._last_ack = (ack.boot_id, ack.seq)

    def _on_cue(self, cue_id: int, cue: Cue) -> None:
        # A resent cue whose CUE_ACK was lost is acknowledged again, not replayed.
        # Ahead of queued records, but never inside a frame half sent.
        at = self._out.find(0) + 1 if self._out_mid_frame else 0
        self._out[at:at] = encode_frame(FrameType.CUE_ACK, cue_id)
        if cue_id in self._played_cues:
            return
        self._played_cues.append(cue_id)
        self.result.cues += 1
        log.info("%s: haptic cue %d: %s for %d ms x%d", self.device_id, cue_id, cue.pattern.name, cue.duration_ms, cue.repeat)
        if self.cue_log is not None:
            with open(self.cue_log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"device_id": self.device_id, "cue_id": cue_id, "pattern": cue.pattern.name,
                                     "duration_ms": cue.duration_ms, "repeat": cue.repeat, "at": time.time()}) + "\n")

    def _read(self) -> None:
        data = self.link.read()
        if not data:
            return
        for item in self._decoder.feed(data):
            if not hasattr(item, "type"):
                continue  # line noise from the gateway's side: nothing to do
            try:
                if item.type is FrameType.ACK:
                    self._on_ack(Ack.from_payload(item.payload))
                elif item.type is FrameType.CUE:
                    self._on_cue(item.seq, Cue.from_payload(item.payload))
            except FrameError as exc:
                log.debug("%s: ignoring a malformed %s frame: %s", self.device_id, item.type.name, exc)

    # --- main loop ----------------------------------------------------------

    def _maybe_fault(self) -> None:
        if not self._pending and self._next_sample >= len(self.recording.samples):
            return  # the replay is complete: a fault now would test nothing
        acked = self.result.acked
        if self.reboot_after is not None and acked >= self.reboot_after:
            self.reboot_after = None
            self._boot_id = uuid.uuid4()
            self._boot_started = time.monotonic()
            self._next_seq = 1
            self.result.boots += 1
            log.info("%s: rebooting (new boot %s) with %d records still unacknowledged", self.device_id,
                     self._boot_id, len(self._pending))
            self._rewind("reboot")
        if self.unplug_after is not None and acked >= self.unplug_after and isinstance(self.link, PtyLink):
            self.unplug_after = None
            log.info("%s: cable unplugged for 1 s", self.device_id)
            self.link.unplug()
            time.sleep(1.0)
            self.link.replug()
            self._decoder = StreamDecoder()
            self._out_mid_frame = False
            self._rewind("replugged", line_lost=True)

    def run(self, timeout_s: float | None = None) -> ReplayResult:
        """Replay until the gateway has ACKed every record (or ``timeout_s`` passes)."""
        started = time.monotonic()
        self._rewind("start", line_lost=True)
        samples = len(self.recording.samples)
        while True:
            now = time.monotonic()
            self._produce(now, started)
            if self._next_sample >= samples and not self._pending:
                self.result.complete = True
                break
            if timeout_s is not None and now - started > timeout_s:
                break
            if now - self._last_progress > self.rto_s and self._pending:
                self._rewind("no ACK progress", line_lost=True)
            self._fill_out()
            fd = self.link.fileno()
            writable = [fd] if self._out else []
            readable, can_write, _ = select.select([fd], writable, [], 0.05)
            if can_write and self._out:
                sent = self.link.write(bytes(self._out[:4096]))
                if sent:
                    self._out_mid_frame = self._out[sent - 1] != 0
                    del self._out[:sent]
            if readable:
                self._read()
            self._maybe_fault()
        self.result.seconds = time.monotonic() - started
        return self.result
