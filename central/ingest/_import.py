"""Importing a signed bundle file through the live ingest path."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from central.errors import CentralError
from central.ingest._decode import DecodedBatch, PoisonMessage, accept_batches, check_records
from central.store import StoreUnavailable, TelemetryStore
from firmware_shim.bundle_format import BundleMetadata, read_bundle

__all__ = ["ImportResult", "import_bundle"]

log = logging.getLogger(__name__)

#: Store write attempts per chunk before the import gives up (re-running it is safe).
_WRITE_ATTEMPTS = 6


@dataclass(frozen=True)
class ImportResult:
    """What an import wrote."""

    metadata: BundleMetadata
    records: int
    duration_s: float


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

    Nothing is written unless the signature holds and every record is
    acceptable. Importing the same bundle again rewrites the same rows.

    Raises:
        BundleError: unsigned, truncated, altered or untrusted (nothing written).
        CentralError: a record is implausible (nothing written), or the store
            stayed unavailable (re-run the import; what was written stays).
    """
    started = time.monotonic()
    metadata, records = read_bundle(path, trusted_keys)
    done = 0
    for chunk in _chunks(records, chunk_records):
        try:
            check_records(chunk)
        except PoisonMessage as exc:
            raise CentralError(
                f"bundle {str(path)!r} refused: {exc.detail}; nothing was imported"
            ) from None
        done += len(chunk)
        if progress:
            progress("check", done, metadata.record_count)

    metadata, records = read_bundle(path, trusted_keys)
    done = 0
    for chunk in _chunks(records, chunk_records):
        batch = DecodedBatch(metadata.gateway_id, metadata.site, metadata.schema_version, chunk)
        done += _write_chunk(store, batch, path)
        if progress:
            progress("write", done, metadata.record_count)
    duration_s = time.monotonic() - started
    log.info(
        "imported bundle %s: %d records from gateway %s in %.1f s",
        path,
        done,
        metadata.gateway_id,
        duration_s,
    )
    return ImportResult(metadata, done, duration_s)


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
