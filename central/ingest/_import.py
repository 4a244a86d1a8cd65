"""Importing a signed bundle file through the live ingest path."""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from central.errors import CentralError
from central.ingest._decode import DecodedBatch, PoisonMessage, accept_batches, check_records
from central.ledger import SeqRange, contiguous_runs, merge_ranges
from central.store import StoreUnavailable, TelemetryStore
from firmware_shim.bundle_format import BundleMetadata, read_bundle

__all__ = ["ImportResult", "import_bundle"]

log = logging.getLogger(__name__)

#: Store write attempts per chunk before the import gives up (re-running it is safe).
_WRITE_ATTEMPTS = 6


#: A device id no tracker can have (trackers' ids are printable): reading its
#: ledger costs one indexed lookup and fails at once when the schema is missing.
_SCHEMA_PROBE_DEVICE = "\x00pulsegate-schema-probe"
#: Seq ranges kept per device boot before they are merged again while a bundle
#: is read: its records come in runs, so this bounds memory for any order.
_RUNS_BEFORE_MERGE = 4096


@dataclass(frozen=True)
class ImportResult:
    """What an import wrote.

    Attributes:
        metadata: The verified bundle's header.
        records: Records written (every record of the bundle).
        new_records: Distinct records central's ledger did not hold before.
        held_records: Distinct records the ledger already held (a re-import).
        duration_s: Wall time of the whole import.
    """

    metadata: BundleMetadata
    records: int
    new_records: int
    held_records: int
    duration_s: float

    @property
    def repeated_records(self) -> int:
        """Records the bundle holds more than once (same device, boot and seq)."""
        return self.records - self.new_records - self.held_records


class _BundleKeys:
    """The distinct ``(device, boot, seq)`` keys of a bundle, kept as seq ranges per boot."""

    def __init__(self) -> None:
        self._runs: dict[tuple[str, str], list[SeqRange]] = defaultdict(list)
        self._boots: dict[object, str] = {}  # boot ids repeat: canonicalise each once

    def add(self, records: Iterable[dict[str, Any]]) -> None:
        seqs: dict[tuple[str, str], list[int]] = defaultdict(list)
        for record in records:
            seqs[(record["device_id"], self._boot_text(record["boot_id"]))].append(record["seq"])
        for key, found in seqs.items():
            runs = self._runs[key]
            runs.extend(contiguous_runs(found))
            if len(runs) > _RUNS_BEFORE_MERGE:
                runs[:] = merge_ranges(runs)

    def _boot_text(self, boot_id: object) -> str:
        text = self._boots.get(boot_id)
        if text is None:
            # The ledger spells a boot as str(UUID); a bundle may hold either form.
            as_uuid = boot_id if isinstance(boot_id, uuid.UUID) else uuid.UUID(str(boot_id))
            text = self._boots[boot_id] = str(as_uuid)
        return text

    def by_device(self) -> dict[str, dict[str, tuple[SeqRange, ...]]]:
        """Merged ranges per device, then per boot."""
        devices: dict[str, dict[str, tuple[SeqRange, ...]]] = defaultdict(dict)
        for (device, boot), runs in self._runs.items():
            devices[device][boot] = merge_ranges(runs)
        return devices


def _overlap(ours: tuple[SeqRange, ...], held: tuple[SeqRange, ...]) -> int:
    """How many seqs two sorted, disjoint range lists share."""
    shared, i, j = 0, 0, 0
    while i < len(ours) and j < len(held):
        first, last = max(ours[i][0], held[j][0]), min(ours[i][1], held[j][1])
        shared += max(0, last - first + 1)
        if ours[i][1] < held[j][1]:
            i += 1
        else:
            j += 1
    return shared


def _count_held(store: TelemetryStore, keys: _BundleKeys) -> tuple[int, int]:
    """Distinct keys of the bundle, and how many of them the ledger already holds.

    Read per device the bundle names (an indexed read on both backends), not
    the whole fleet's ledger. A record another writer lands between this read
    and the import's own write counts as new.
    """
    distinct = held = 0
    for device, boots in keys.by_device().items():
        ledger = {entry.boot_id: entry.held for entry in store.ledger(device)}
        for boot, ranges in boots.items():
            distinct += sum(last - first + 1 for first, last in ranges)
            held += _overlap(ranges, ledger.get(boot, ()))
    return distinct, held


#: ``progress(phase, done, total)``; phase is ``"check"`` then ``"write"``.
Progress = Callable[[str, int, int], None]


def _chunks(records: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    while chunk := list(islice(records, size)):
        yield chunk


def import_bundle(
    store: TelemetryStore,
    path: str | Path,
    trusted_keys: Mapping[str, Ed25519PublicKey],
    *,
    chunk_records: int = 5000,
    progress: Progress | None = None,
) -> ImportResult:
    """Verify a bundle, check every record, then write it as live ingest writes a message.

    Nothing is written unless the store has its schema, the signature holds
    and every record is acceptable. Importing the same bundle again rewrites
    the same rows; the result tells how many records the ledger already held.

    Raises:
        StoreError: the store has no schema (checked before the bundle is read).
        BundleError: unsigned, truncated, altered or untrusted (nothing written).
        CentralError: a record is implausible (nothing written), or the store
            stayed unavailable (re-run the import; what was written stays).
    """
    started = time.monotonic()
    # The store first: a missing schema is found in a moment, not after a
    # whole bundle was verified and checked.
    store.ledger(_SCHEMA_PROBE_DEVICE)
    metadata, keys = _check_bundle(path, trusted_keys, chunk_records, progress)
    distinct, held = _count_held(store, keys)

    metadata, records = read_bundle(path, trusted_keys)
    done = 0
    for chunk in _chunks(records, chunk_records):
        batch = DecodedBatch(metadata.gateway_id, metadata.site, metadata.schema_version, chunk)
        done += _write_chunk(store, batch, path)
        if progress:
            progress("write", done, metadata.record_count)
    duration_s = time.monotonic() - started
    log.info(
        "imported bundle %s: %d records from gateway %s (%d new, %d already held) in %.1f s",
        path,
        done,
        metadata.gateway_id,
        distinct - held,
        held,
        duration_s,
    )
    return ImportResult(metadata, done, distinct - held, held, duration_s)


def _check_bundle(
    path: str | Path,
    trusted_keys: Mapping[str, Ed25519PublicKey],
    chunk_records: int,
    progress: Progress | None,
) -> tuple[BundleMetadata, _BundleKeys]:
    """Verify the bundle and check every record; return its metadata and its keys."""
    metadata, records = read_bundle(path, trusted_keys)
    keys = _BundleKeys()
    done = 0
    for chunk in _chunks(records, chunk_records):
        try:
            check_records(chunk)
        except PoisonMessage as exc:
            raise CentralError(
                f"bundle {str(path)!r} refused: {exc.detail}; nothing was imported"
            ) from None
        keys.add(chunk)
        done += len(chunk)
        if progress:
            progress("check", done, metadata.record_count)
    return metadata, keys


def _write_chunk(store: TelemetryStore, batch: DecodedBatch, path: str | Path) -> int:
    for attempt in range(1, _WRITE_ATTEMPTS + 1):
        try:
            return accept_batches(store, [batch])
        except StoreUnavailable as exc:
            if attempt == _WRITE_ATTEMPTS:
                raise CentralError(
                    f"store unavailable while importing {str(path)!r} ({exc}); run the import again once it is back"
                ) from exc
            log.warning("store unavailable (%s); retry %d of %d", exc, attempt, _WRITE_ATTEMPTS - 1)
            time.sleep(min(8.0, 0.5 * 2**attempt))
    raise AssertionError("unreachable")
