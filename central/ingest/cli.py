"""CLI commands of central's store and ingest: ``db init``, ``ledger``, ``ingest``, ``import``.

Registered on the ``pulsegate central`` group in :mod:`central.cli`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import click

from central.settings import CentralSettings, load_settings
from pulsegate.console_output import output_console

if TYPE_CHECKING:
    from collections.abc import Mapping

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from rich.console import Console

    from central.ingest import ImportResult
    from central.store import TelemetryStore

__all__ = ["db", "ledger", "ingest", "import_command"]

log = logging.getLogger(__name__)

_CONFIG = click.option("--config", type=click.Path(dir_okay=False), help="TOML config file.")
#: Missing ranges shown per boot in the table; --json lists them all.
_RANGES_SHOWN = 4


def _progress_console() -> Console:
    """Progress goes to stderr, and only on a terminal: piped stdout stays just the result."""
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        console.quiet = True  # rich would still print a blank line when a bar stops
    return console


@click.group()
def db() -> None:
    """The store's schema."""


@db.command("init")
@_CONFIG
def db_init(config: str | None) -> None:
    """Create the keyspace (or SQLite file) and tables; safe to run again."""
    from central.store import open_store, sqlite_path

    settings = load_settings(config)
    store = open_store(settings)
    try:
        store.init_schema()
    finally:
        store.close()
    if settings.store.backend == "cassandra":
        click.echo(
            f"keyspace {settings.cassandra.keyspace} ready (replication {settings.cassandra.replication})"
        )
    else:
        click.echo(f"store ready in {sqlite_path(settings)}")


@click.command()
@_CONFIG
@click.option("--device", "device_id", help="Only this device.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def ledger(config: str | None, device_id: str | None, as_json: bool) -> None:
    """Per device boot: the records central holds and the gaps between them."""
    from central.store import open_store

    store = open_store(load_settings(config), create=False)
    try:
        entries = store.ledger(device_id)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps({"devices": [entry.as_json() for entry in entries]}, indent=2))
        return
    from rich.table import Table
    from rich.text import Text

    table = Table()
    for name in ("device", "boot", "gateway"):
        table.add_column(name, overflow="fold")
    for name in ("records", "first", "last", "gaps"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("missing", overflow="fold")
    for entry in entries:
        shown = ", ".join(
            f"{a}-{b}" if a != b else str(a) for a, b in entry.missing[:_RANGES_SHOWN]
        )
        more = len(entry.missing) - _RANGES_SHOWN
        table.add_row(
            Text(entry.device_id),  # Text: an id is never read as rich markup
            entry.boot_id[:8],
            Text(entry.gateway_id or ""),
            str(entry.records),
            str(entry.first_seq),
            str(entry.last_seq),
            str(entry.gaps),
            shown + (f" (+{more} more)" if more > 0 else ""),
            style="red" if entry.gaps else None,
        )
    output_console().print(table if entries else "the ledger is empty")


def _open_store_when_up(settings: CentralSettings, stop: threading.Event) -> TelemetryStore:
    """Open the store, waiting with backoff while it is unreachable (Cassandra starting)."""
    from tenacity import (
        Retrying,
        before_sleep_log,
        retry_if_exception_type,
        wait_random_exponential,
    )

    from central.store import StoreUnavailable, open_store

    retrying = Retrying(
        retry=retry_if_exception_type(StoreUnavailable),
        wait=wait_random_exponential(multiplier=0.5, max=settings.ingest.max_backoff_s),
        stop=lambda _state: stop.is_set(),
        sleep=stop.wait,
        before_sleep=before_sleep_log(log, logging.WARNING),
        reraise=True,
    )
    return retrying(open_store, settings)


@click.command()
@_CONFIG
def ingest(config: str | None) -> None:
    """Consume telemetry from RabbitMQ into the store until SIGTERM or Ctrl-C.

    Run as many as you like: they share the queue.
    """
    from central.errors import CentralError
    from central.ingest import IngestWorker
    from central.ingest._metrics import serve_metrics

    settings = load_settings(config)
    if "PULSEGATE_LOG_LEVEL" not in os.environ and logging.getLogger().level == logging.WARNING:
        # A long-running worker says when it connects, consumes, summarises and stops
        # (a few lines a minute, none per record) unless a level was chosen.
        logging.getLogger("central.ingest").setLevel(logging.INFO)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        serve_metrics(settings.ingest.metrics_address)
    except (OSError, ValueError) as exc:
        raise CentralError(
            f"cannot serve metrics on ingest.metrics_address {settings.ingest.metrics_address!r}: {exc}; "
            'pick a free port or set it to "" for a second worker on this host'
        ) from None
    store = _open_store_when_up(settings, stop)
    worker = IngestWorker(settings, store, stop=stop)
    try:
        worker.run()
    finally:
        store.close()
    log.info("ingest worker stopped")


@click.command("import")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False))
@_CONFIG
def import_command(bundle: str, config: str | None) -> None:
    """Import a signed bundle file carried from an offline gateway (safe to repeat).

    Prints how many records were new to central and how many it already held.
    """
    from central.store import open_store
    from firmware_shim.bundle_format import load_trusted_keys
    from pulsegate.config import ConfigError

    settings = load_settings(config)
    # The store before the bundle: a wrong state_dir or a store without
    # tables is one line at once, not after a long verification.
    store = open_store(settings, create=False)
    try:
        keys_dir = Path(settings.bundle.trusted_keys_dir or settings.central.state_dir / "trusted-keys")
        if not keys_dir.is_dir():  # configuration, not a bad bundle: exit 2
            raise ConfigError(
                f"trusted keys folder {str(keys_dir)!r} does not exist; create it and copy each gateway's "
                "<gateway_id>.pub into it, or set [bundle] trusted_keys_dir"
            )
        trusted = load_trusted_keys(keys_dir)
        result = _import_with_progress(store, bundle, trusted, settings)
    finally:
        store.close()
    meta = result.metadata
    repeated = (
        f"; {result.repeated_records:,} records appear more than once in the bundle"
        if result.repeated_records
        else ""
    )
    click.echo(
        f"imported {result.new_records:,} new records ({result.held_records:,} already held) "
        f"from gateway {meta.gateway_id} (site {meta.site}, created {meta.created_at}) "
        f"in {result.duration_s:.1f} s{repeated}"
    )


def _import_with_progress(
    store: TelemetryStore, bundle: str, trusted: Mapping[str, Ed25519PublicKey], settings: CentralSettings
) -> ImportResult:
    """Run the import with a transient progress bar per phase (drawn only on a terminal)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from central.ingest import import_bundle

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True, console=_progress_console()) as bar:
        tasks: dict[str, int] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                label = "checking" if phase == "check" else "writing"
                tasks[phase] = bar.add_task(label, total=total)
            bar.update(tasks[phase], completed=done)

        return import_bundle(
            store,
            bundle,
            trusted,
            chunk_records=settings.bundle.import_chunk_records,
            progress=progress,
        )


@click.group("dead-letters")
def dead_letters() -> None:
    """Messages ingest could not process: list them, or replay them onto the ingest path."""


@dead_letters.command("list")
@_CONFIG
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=0), help="Messages to show.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def dead_letters_list(config: str | None, limit: int, as_json: bool) -> None:
    """Show how many messages are dead-lettered, and why (they stay where they are)."""
    from dataclasses import asdict

    from central.ingest._dead_letters import open_channel, peek_dead_letters

    settings = load_settings(config)
    connection, channel = open_channel(settings.amqp.url)
    try:
        total, letters = peek_dead_letters(channel, limit)
    finally:
        connection.close()
    if as_json:
        click.echo(json.dumps({"total": total, "messages": [asdict(letter) for letter in letters]}, indent=2))
        return
    click.echo(f"{total} message(s) in the dead-letter queue" + (f"; the first {len(letters)}:" if letters else ""))
    for letter in letters:
        click.echo(f"  {letter.message_id or '-'}  gateway {letter.gateway_id}  {letter.reason}: {letter.error}")


@dead_letters.command("replay")
@_CONFIG
@click.option("--reason", help="Only messages dead-lettered for this reason code (e.g. delivery_limit).")
@click.option("--limit", type=click.IntRange(min=1), help="Replay at most this many.")
def dead_letters_replay(config: str | None, reason: str | None, limit: int | None) -> None:
    """Publish dead-lettered messages again to the telemetry exchange (safe: ingest is idempotent)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from central.ingest._dead_letters import open_channel, replay_dead_letters

    settings = load_settings(config)
    connection, channel = open_channel(settings.amqp.url)
    try:
        with Progress(TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), transient=True,
                      console=_progress_console()) as bar:
            task = bar.add_task("replay", total=None)
            result = replay_dead_letters(
                channel, limit=limit, reason=reason,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    finally:
        connection.close()
    click.echo(f"replayed {result.replayed} message(s); {result.skipped} skipped by --reason; "
               f"{result.remaining} left in the dead-letter queue")
