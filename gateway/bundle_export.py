"""Export the outbox to a signed bundle file for an offline gym (sneakernet).

The export copies; it removes nothing from the outbox. Records leave the
outbox only when the broker confirms them, so a bundle carried to central and
a later uplink may both deliver a record: central's upserts make that
harmless.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from firmware_shim import decode_datum, schema_by_fingerprint
from firmware_shim.bundle_format import BundleError, generate_signing_key, load_signing_key
from gateway._outbox import DB_FILENAME, damaged
from gateway.errors import GatewayError
from gateway.settings import GatewaySettings

__all__ = ["export_bundle", "signing_key_path", "ensure_signing_key"]

log = logging.getLogger(__name__)

SIGNING_KEY_FILENAME = "bundle-signing.key"


def signing_key_path(state_dir: Path) -> Path:
    """The gateway's Ed25519 private key; the public half sits beside it as ``.pub``."""
    return Path(state_dir) / SIGNING_KEY_FILENAME


def ensure_signing_key(state_dir: Path) -> Any:
    """Load the gateway's signing key, creating the pair on first use."""
    path = signing_key_path(state_dir)
    try:
        return load_signing_key(path) if path.exists() else generate_signing_key(path)
    except BundleError as exc:
        raise GatewayError(str(exc)) from None


def _records(conn: sqlite3.Connection) -> Iterator[dict[str, Any]]:
    rows = conn.execute("SELECT schema_fingerprint, datum FROM outbox ORDER BY id")
    for fingerprint, datum in rows:
        info = schema_by_fingerprint(fingerprint)
        if info is None:  # cannot happen: ingest accepts only known schemas
            raise GatewayError(f"outbox holds a record of unknown schema {bytes(fingerprint).hex()}")
        yield decode_datum(info, datum)


def export_bundle(
    settings: GatewaySettings, out: Path, *, progress: bool | Callable[[int, int], None] = False
) -> int:
    """Write every buffered record to a signed bundle at ``out``; return the count.

    Args:
        progress: True for a progress bar on the terminal, or a callback
            ``(done, total)`` (the control API streams it to the UI).
    """
    state_dir = Path(settings.gateway.state_dir)
    if not (state_dir / DB_FILENAME).exists():
        from gateway.state_reader import (
            StateDirError,  # here: state_reader's imports reach this module
        )

        # A wrong --state-dir is a usage error (exit 2), as for status and public-key.
        raise StateDirError(f"no gateway database in {str(state_dir)!r}; pass the --state-dir the gateway runs with")
    if not Path(out).parent.is_dir():
        raise GatewayError(f"cannot write {str(out)!r}: folder {str(Path(out).parent)!r} does not exist (is the USB stick mounted?)")
    key = ensure_signing_key(state_dir)
    conn = sqlite3.connect(f"file:{state_dir / DB_FILENAME}?mode=ro", uri=True, timeout=5.0)
    try:
        return _export(conn, settings, out, key, progress)
    except sqlite3.DatabaseError as exc:
        raise damaged(state_dir / DB_FILENAME, exc) from None
    finally:
        conn.close()


def _export(conn: sqlite3.Connection, settings: GatewaySettings, out: Path, key: Any,
            progress: bool | Callable[[int, int], None]) -> int:
    settings = _with_stored_identity(conn, settings)
    # One read transaction: the count and the rows see the same snapshot
    # while the daemon keeps committing.
    conn.execute("BEGIN")
    total = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
    log.info("exporting %d records of gateway %s to %s", total, settings.gateway.id, out)
    if callable(progress):
        callback = progress
        meta = _write(out, conn, settings, key, lambda n: callback(n, total))
    elif progress:
        with Progress(TextColumn("exporting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) as bar:
            task = bar.add_task("export", total=total)
            meta = _write(out, conn, settings, key, lambda n: bar.update(task, completed=n))
    else:
        meta = _write(out, conn, settings, key, None)
    return meta.record_count


def _with_stored_identity(conn: sqlite3.Connection, settings: GatewaySettings) -> GatewaySettings:
    # Sign as the gateway that collected the records (its daemon recorded
    # its id and site), not as whatever this shell's config says.
    try:
        stored = dict(conn.execute("SELECT key, value FROM identity").fetchall())
    except sqlite3.OperationalError:  # a database from before the identity table
        return settings
    if not stored:
        return settings
    if (stored["gateway_id"], stored["site"]) != (settings.gateway.id, settings.gateway.site):
        log.info("exporting as gateway %s (site %s), the identity the records were collected under",
                 stored["gateway_id"], stored["site"])
    copy = dataclasses.replace(settings, gateway=dataclasses.replace(
        settings.gateway, id=stored["gateway_id"], site=stored["site"]))
    return copy


def _write(out: Path, conn: sqlite3.Connection, settings: GatewaySettings, key: Any, progress: Any) -> Any:
    from firmware_shim.bundle_format import write_bundle

    try:
        return write_bundle(out, _records(conn), gateway_id=settings.gateway.id, site=settings.gateway.site,
                            signing_key=key, progress=progress)
    except OSError as exc:
        raise GatewayError(f"cannot write bundle {str(out)!r}: {exc.strerror or exc}") from None
