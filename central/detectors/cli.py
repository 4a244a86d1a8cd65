"""``pulsegate central detect``: run the detectors once or in a loop."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import click

from central.errors import CentralError

__all__ = ["detect"]

log = logging.getLogger(__name__)

#: Longest wait between attempts to open a store that is not up yet.
_MAX_OPEN_BACKOFF_S = 30.0


@click.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML config file.",
)
@click.option("--once", is_flag=True, help="Run one pass, print what it did, and exit.")
@click.option(
    "--interval",
    "interval_s",
    type=click.FloatRange(min=0.1),
    default=None,
    help="Seconds between passes (default: [detectors] interval_s).",
)
def detect(config_path: Path | None, once: bool, interval_s: float | None) -> None:
    """Judge the fleet and the wearers' samples; raise and resolve incidents.

    Prints one line per incident raised, repeated, resolved or recorded. Any
    number of detect processes may run at once (split the fleet between them
    with [detectors] shard_index / shard_count).
    """
    from central.detectors import DetectLoop, Detectors
    from central.fleet import FleetMetrics, serve_fleet_metrics
    from central.settings import load_settings
    from central.store import StoreUnavailable

    settings = load_settings(config_path)
    if once:
        detectors = Detectors.open(settings)
        try:
            DetectLoop(detectors, emit=click.echo).run_once_strict()
        finally:
            detectors.close()
        return

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    metrics = FleetMetrics()
    try:
        serve_fleet_metrics(settings.detectors.metrics_address, metrics)
    except OSError as exc:
        raise CentralError(
            f"cannot serve fleet metrics on detectors.metrics_address {settings.detectors.metrics_address!r}: {exc}; "
            'pick a free port or set it to "" for a second detect process on this host'
        ) from None
    backoff_s = 1.0
    while not stop.is_set():
        try:
            detectors = Detectors.open(settings)
            break
        except StoreUnavailable as exc:
            log.warning("store not reachable (%s); retrying in %g s", exc, backoff_s)
            stop.wait(backoff_s)
            backoff_s = min(backoff_s * 2, _MAX_OPEN_BACKOFF_S)
    else:
        return
    try:
        DetectLoop(detectors, metrics, emit=click.echo, stop=stop).run(
            interval_s or settings.detectors.interval_s
        )
    finally:
        detectors.close()
