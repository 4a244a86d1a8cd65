"""``pulsegate shim``: the tracker emulator."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

import click

from firmware_shim._emulator import PtyLink, SerialLink, SerialPortLink, TrackerEmulator
from firmware_shim._recordings import read_recording
from firmware_shim._records import SCHEMA_VERSIONS

log = logging.getLogger(__name__)

#: How often the progress display reads the emulator's counters: smooth enough
#: for a person, and nothing next to the emulator's own loop.
_PROGRESS_POLL_S = 0.25


class _ReplayProgress:
    """Records acknowledged / total and the rate, drawn on stderr while the replay runs.

    The emulator's loop owns the serial link, so a small thread reads its
    counters (plain ints) and updates the display; only used on a terminal.
    """

    def __init__(self, emulator: TrackerEmulator) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._emulator = emulator
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="replay-progress", daemon=True)
        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} acknowledged"),
            TextColumn("{task.fields[rate]} records/s"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._task = self._bar.add_task(
            f"{emulator.device_id}: sending", total=emulator.result.records, rate="0"
        )
        self._started = time.monotonic()

    def __enter__(self) -> _ReplayProgress:
        self._bar.start()
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._update()
        self._bar.stop()

    def _poll(self) -> None:
        while not self._stop.wait(_PROGRESS_POLL_S):
            self._update()

    def _update(self) -> None:
        acked = self._emulator.result.acked
        rate = acked / max(time.monotonic() - self._started, 1e-3)
        self._bar.update(self._task, completed=acked, rate=f"{rate:,.0f}")


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
    started = time.monotonic()
    try:
        if sys.stderr.isatty():
            with _ReplayProgress(emulator):
                result = emulator.run(timeout_s)
        else:
            result = emulator.run(timeout_s)
    except KeyboardInterrupt:
        result = emulator.result
    finally:
        link.close()
    seconds = result.seconds or time.monotonic() - started  # 0 when interrupted
    # stderr only, progress and summary alike: stdout stays clean for anything parsing it.
    click.echo(
        f"{emulator.device_id}: {result.acked}/{result.records} records acknowledged in {seconds:.1f} s, "
        f"{result.acked / max(seconds, 1e-3):,.0f} records/s ({result.retransmissions} resent, "
        f"{result.corrupted} corrupted, {result.boots} boot(s), {result.cues} cue(s))",
        err=True,
    )
    if not result.complete:
        sys.exit(3)
