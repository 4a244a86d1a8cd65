"""Decoding and validating telemetry payloads, in the port loop or in worker processes.

Decoding a record's Avro datum and checking its ranges is two thirds of the
CPU serial ingest spends on a record. With ``serial.decode_workers`` > 0 the
port loop only splits frames and hands each round's TELEMETRY payloads to a
process pool, so ingest uses a second core; the writer takes the verdicts in
the order the rounds were read, so the outbox order and the ACKs are what
they would be without the pool.

A worker's verdict for one payload is a small tuple, cheap to send back:

* ``(ACCEPTED, schema_version, device_id, boot_id, timestamp_us, distance_m, heart_rate_bpm)``
* ``(REFUSED, reason, detail, device_id or None, boot_id or None)``: ``boot_id``
  is set when the record was readable but implausible, so its seq counts as
  handled (it is quarantined, not lost).

If the pool breaks (a worker killed), the writer decodes that round itself
and a new pool is started; nothing is lost and nothing was ACKed early.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
import select
import signal
import threading
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from firmware_shim import RecordError, schema, split_soe, validate_record
from firmware_shim._records import SCHEMA_VERSIONS, datum_reader, decode_datum
from gateway._outbox import AcceptedRecord, QuarantinedFrame

__all__ = ["PendingRecord", "DecodeJob", "DecodePool", "check_payload", "check_payloads", "items_for"]

log = logging.getLogger(__name__)

ACCEPTED, REFUSED = 0, 1
#: The record fields cue sources read; the rest stay in the datum.
CUE_FIELDS = ("device_id", "boot_id", "timestamp_us", "distance_m", "heart_rate_bpm")
#: How long the writer waits for a worker's verdicts before deciding the pool is stuck.
_VERDICT_TIMEOUT_S = 30.0


def check_payload(seq: int, payload: bytes) -> tuple:
    """Decode and validate one TELEMETRY payload that came in a frame numbered ``seq``."""
    try:
        info, datum = split_soe(payload)
        record = decode_datum(info, datum)
    except RecordError as exc:
        return (REFUSED, exc.reason, exc.detail, None, None)
    device_id, boot_id = record["device_id"], str(record["boot_id"])
    if record["seq"] != seq:
        return (REFUSED, "seq_mismatch", f"frame seq {seq} but record seq {record['seq']}", device_id, None)
    why = validate_record(record)
    if why is not None:
        return (REFUSED, "out_of_range", why, device_id, boot_id)
    return (ACCEPTED, info.version, device_id, boot_id, record["timestamp_us"], record["distance_m"],
            record["heart_rate_bpm"])


def check_payloads(payloads: list[tuple[int, bytes]]) -> list[tuple]:
    """A worker's task: the verdicts on one round's payloads, in order."""
    return [check_payload(seq, payload) for seq, payload in payloads]


@dataclass(slots=True)
class PendingRecord:
    """A TELEMETRY frame read from ``port`` and not yet decoded."""

    port: str
    port_device_id: str | None  #: the device the port's last HELLO named
    seq: int
    payload: bytes


def items_for(pending: PendingRecord, verdict: tuple) -> AcceptedRecord | QuarantinedFrame:
    """What the writer commits for one decoded frame."""
    if verdict[0] == ACCEPTED:
        _, version, device_id, boot_id, timestamp_us, distance_m, heart_rate_bpm = verdict
        info = schema(version)
        cue_view = dict(zip(CUE_FIELDS, (device_id, boot_id, timestamp_us, distance_m, heart_rate_bpm), strict=True))
        return AcceptedRecord(pending.port, device_id, boot_id, pending.seq, timestamp_us, info.fingerprint,
                              version, pending.payload[10:], cue_view)
    _, reason, detail, device_id, boot_id = verdict
    if boot_id is None:
        return QuarantinedFrame(pending.port, device_id or pending.port_device_id, reason, detail, pending.payload)
    return QuarantinedFrame(pending.port, device_id, reason, detail, pending.payload, boot_id, pending.seq)


@dataclass(slots=True)
class DecodeJob:
    """One port-loop round whose TELEMETRY frames a worker is decoding."""

    items: list  #: the round's items in order, PendingRecord where a verdict goes
    future: concurrent.futures.Future

    def resolve(self) -> list:
        """The round's items with every pending frame replaced by what to commit."""
        pending = [i for i in self.items if isinstance(i, PendingRecord)]
        try:
            verdicts = self.future.result(timeout=_VERDICT_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - a dead worker, a timeout, a pickling fault: decode here
            # A worker stuck for good (never seen) would cost each round this
            # timeout; the pool is restarted only when it reports itself broken.
            log.warning("decode worker failed (%s: %s); decoding %d records in the writer", type(exc).__name__,
                        exc, len(pending))
            verdicts = check_payloads([(p.seq, p.payload) for p in pending])
        resolved = iter(verdicts)
        return [items_for(i, next(resolved)) if isinstance(i, PendingRecord) else i for i in self.items]


def _start_worker(daemon_pid: int) -> None:
    # Ctrl-C in a terminal reaches the whole process group: the daemon shuts
    # the pool down itself, so workers must not die with a traceback first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A worker's parent is the fork server, and both hold the task queue's
    # pipe open: after a kill -9 of the daemon nothing would tell them to go.
    # A pidfd becomes readable when the daemon exits, whatever the signal.
    daemon = os.pidfd_open(daemon_pid)
    threading.Thread(target=_exit_with, args=(daemon,), name="exit-with-daemon", daemon=True).start()
    for version in SCHEMA_VERSIONS:  # compile the readers before the first round
        datum_reader(version)


def _exit_with(daemon_pidfd: int) -> None:
    select.select([daemon_pidfd], [], [])
    os._exit(0)


class DecodePool:
    """A process pool for :func:`check_payloads`, restarted if a worker dies."""

    def __init__(self, workers: int) -> None:
        self._workers = workers
        # forkserver, not fork: the daemon has threads and open serial ports,
        # and workers must inherit neither.
        self._context = multiprocessing.get_context("forkserver")
        self._executor = self._start()

    def _start(self) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(self._workers, mp_context=self._context,
                                                      initializer=_start_worker, initargs=(os.getpid(),))

    def submit(self, items: list[Any]) -> DecodeJob | list[Any]:
        """Start decoding the PendingRecords among ``items``; a round without any is returned as it is."""
        payloads = [(i.seq, i.payload) for i in items if isinstance(i, PendingRecord)]
        if not payloads:  # HELLOs and rejected frames only: nothing for a worker
            return items
        try:
            future = self._executor.submit(check_payloads, payloads)
        except (BrokenProcessPool, RuntimeError) as exc:
            log.warning("decode pool broken (%s); starting a new one", exc)
            self._executor.shutdown(wait=False, cancel_futures=True)
            try:
                self._executor = self._start()
                future = self._executor.submit(check_payloads, payloads)
            except (BrokenProcessPool, RuntimeError, OSError) as again:
                # No pool to be had (out of processes?): the writer decodes
                # this round itself (DecodeJob.resolve), and the next round tries again.
                future = concurrent.futures.Future()
                future.set_exception(again)
        return DecodeJob(items, future)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=False)
