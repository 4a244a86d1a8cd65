"""``pulsegate shim``: the tracker emulator."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import click

from firmware_shim._emulator import PtyLink, SerialLink, SerialPortLink, TrackerEmulator
from firmware_shim._recordings import read_recording
from firmware_shim._records import SCHEMA_VERSIONS

log = logging.getLogger(__name__)


@click.group()
def shim() -> None:
    """The tracker side: replay recordings over a serial port."""


@shim.command()
@click.argument("recording", type=click.Path(path_type=Path))
@click.option("--port", "port", metavar="PATH", help="Serial device to write to, e.g. /dev/ttyUSB0.")
@click.option("--create-pty", "pty_link", metavar="PATH", type=click.Path(dir_okay=False),
              help="Make a pseudo-terminal and link its far end at PATH, for a gateway on this machine.")
@click.option("--device-id", help="Tracker id [default: the recording's file name without extension].")
@click.option("--speed", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Replay N times faster than recorded [default: 1 unless --max-rate].")
@click.option("--max-rate", is_flag=True, help="Send as fast as the gateway ACKs.")
@click.option("--noise", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="Fraction of frames to corrupt on the wire (bit flips, garbage, cut frames).")
@click.option("--reboot-after", type=click.IntRange(min=1), metavar="N",
              help="Reboot (new boot id) once N records are acknowledged.")
@click.option("--unplug-after", type=click.IntRange(min=1), metavar="N",
              help="With --create-pty: pull the cable for a second once N records are acknowledged.")
@click.option("--schema-version", type=click.Choice([str(v) for v in SCHEMA_VERSIONS]),
              default=str(SCHEMA_VERSIONS[-1]), show_default=True, help="Telemetry schema the firmware writes.")
@click.option("--cue-log", type=click.Path(dir_okay=False, path_type=Path),
              help="Append every haptic cue received to this JSON-lines file.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True),
              help="Give up (exit 3) after this many seconds.")
@click.option("--seed", type=int, help="Seed for --noise, for repeatable runs.")
def replay(
    recording: Path, port: str | None, pty_link: str | None, device_id: str | None, speed: float | None,
    max_rate: bool, noise: float, reboot_after: int | None, unplug_after: int | None, schema_version: str,
    cue_log: Path | None, timeout_s: float | None, seed: int | None,
) -> None:
    """Replay a FIT, GPX or TCX RECORDING as a tracker on a serial port.

    Exits 0 once the gateway has acknowledged every record of the recording.
    """
    if (port is None) == (pty_link is None):
        raise click.UsageError("give exactly one of --port PATH or --create-pty PATH")
    if max_rate and speed is not None:
        raise click.UsageError("--speed and --max-rate exclude each other")
    rec = read_recording(recording)
    link: SerialLink = PtyLink(pty_link) if pty_link else SerialPortLink(port or "")
    # SIGTERM ends the replay like Ctrl-C does: unlink the terminal, report.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    emulator = TrackerEmulator(
        rec, link, device_id=device_id, speed=None if max_rate else (speed or 1.0), noise_rate=noise,
        reboot_after=reboot_after, unplug_after=unplug_after, schema_version=int(schema_version),
        cue_log=cue_log, seed=seed,
    )
    click.echo(f"{emulator.device_id}: replaying {len(rec.samples)} records from {recording.name} "
               f"on {pty_link or port}", err=True)
    try:
        result = emulator.run(timeout_s)
    except KeyboardInterrupt:
        result = emulator.result
    finally:
        link.close()
    click.echo(
        f"{emulator.device_id}: {result.acked}/{result.records} records acknowledged in {result.seconds:.1f} s "
        f"({result.retransmissions} resent, {result.corrupted} corrupted, {result.boots} boot(s), {result.cues} cue(s))",
        err=True,
    )
    if not result.complete:
        sys.exit(3)
