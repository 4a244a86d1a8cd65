"""``pulsegate demo``: the whole flow on one machine, with no server.

Emulated trackers replay every recording over pseudo-terminals into a
gateway that validates and durably buffers each record; the gateway then
exports a signed bundle, which central imports into its embedded store.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from firmware_shim import read_recording  # noqa: F401  (documents where samples come from)
from firmware_shim._recordings import SUPPORTED_SUFFIXES
from gateway.errors import GatewayError
from pulsegate.console_output import output_console

__all__ = ["run_demo", "default_recordings_dir"]

#: Progress bars go to stderr, and only on a terminal: piped stdout holds the results alone.
_PROGRESS_CONSOLE = Console(stderr=True)

#: Longest the demo waits for every tracker to finish; the whole corpus takes
#: well under a minute on a 2-core machine.
_REPLAY_TIMEOUT_S = 300.0


def default_recordings_dir() -> Path:
    """The fixture recordings shipped with the source tree."""
    return Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "recordings"


@dataclass
class _Tracker:
    device_id: str
    recording: Path
    link: Path
    process: subprocess.Popen
    records: int | None = None


def _recordings(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUPPORTED_SUFFIXES)
    if not files:
        raise GatewayError(f"no FIT, GPX or TCX recordings under {str(folder)!r}; pass --recordings DIR")
    return files


def _start_trackers(files: list[Path], ports_dir: Path, log_dir: Path) -> list[_Tracker]:
    trackers = []
    for path in files:
        device_id = path.stem
        link = ports_dir / device_id
        log_file = (log_dir / f"{device_id}.log").open("w")
        process = subprocess.Popen(
            [sys.executable, "-m", "pulsegate", "shim", "replay", str(path), "--create-pty", str(link),
             "--max-rate", "--timeout", str(_REPLAY_TIMEOUT_S)],
            stdout=subprocess.DEVNULL, stderr=log_file,
        )
        trackers.append(_Tracker(device_id, path, link, process))
    return trackers


def _records_announced(tracker: _Tracker, log_dir: Path) -> int | None:
    # The emulator's first line is "<device>: replaying N records from ...".
    text = (log_dir / f"{tracker.device_id}.log").read_text(errors="replace")
    for line in text.splitlines():
        if " replaying " in line:
            return int(line.split(" replaying ")[1].split()[0])
    return None


#: The file that marks a folder as the demo's own, so only such a folder is wiped.
_MARKER = ".pulsegate-demo"


def _clear_state_dir(state: Path) -> None:
    """Delete an earlier demo's folder; refuse to delete anything else."""
    if not state.exists():
        return
    # A wrong --state-dir is a usage error (exit 2), named like click names bad options.
    if not state.is_dir():
        raise click.BadParameter(f"{str(state)!r} is a file; give a folder for the demo's state",
                                 param_hint="'--state-dir'")
    if any(state.iterdir()) and not (state / _MARKER).exists():
        raise click.BadParameter(
            f"{str(state)!r} is not empty and not an earlier demo's folder; "
            "the demo wipes its state dir, so give a new or empty folder", param_hint="'--state-dir'"
        )
    shutil.rmtree(state)


def _log_to_file(path: Path) -> None:
    # The console shows progress and results; every log line of the
    # gateway goes to a file the operator can read afterwards.
    root = logging.getLogger()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def run_demo(state_dir: str | Path, recordings: str | Path | None = None, *, keep_running: bool = False) -> int:
    """Run the demo; return the process exit code."""
    from gateway._daemon import GatewayDaemon
    from gateway.settings import GatewaySettings

    console = output_console()  # whole rows when piped (e.g. make demo | tee)
    state = Path(state_dir)
    files = _recordings(Path(recordings) if recordings else default_recordings_dir())
    _clear_state_dir(state)
    ports_dir, log_dir = state / "ports", state / "logs"
    ports_dir.mkdir(parents=True)
    log_dir.mkdir()
    (state / _MARKER).write_text("made by pulsegate demo; the next demo run on this folder deletes it\n")
    _log_to_file(log_dir / "gateway.log")
    console.print(f"[bold]Pulsegate demo[/bold]: {len(files)} recordings, state in {state}")

    trackers = _start_trackers(files, ports_dir, log_dir)
    daemon = None
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=_PROGRESS_CONSOLE, disable=not _PROGRESS_CONSOLE.is_terminal,
                      transient=False) as progress:
            booting = progress.add_task("trackers reading their recordings", total=len(trackers))
            deadline = time.monotonic() + _REPLAY_TIMEOUT_S
            while True:
                for t in trackers:
                    if t.records is None:
                        t.records = _records_announced(t, log_dir)
                    if t.process.poll() not in (None, 0):
                        raise GatewayError(f"tracker {t.device_id} failed: see {log_dir / (t.device_id + '.log')}")
                ready = sum(t.records is not None and t.link.exists() for t in trackers)
                progress.update(booting, completed=ready)
                if ready == len(trackers):
                    break
                if time.monotonic() > deadline:
                    raise GatewayError("trackers did not start in time; see the logs in " + str(log_dir))
                time.sleep(0.1)

            settings = GatewaySettings()
            settings.gateway.id, settings.gateway.site = "demo-gateway", "demo-gym"
            settings.gateway.state_dir = state / "gateway"
            settings.metrics.listen_address = ""
            daemon = GatewayDaemon(settings, [str(t.link) for t in trackers])
            daemon.start()
            total = sum(t.records or 0 for t in trackers)
            buffering = progress.add_task("records durably buffered", total=total)
            while any(t.process.poll() is None for t in trackers):
                progress.update(buffering, completed=daemon.writer.stats.records_committed if daemon.writer else 0)
                if time.monotonic() > deadline:
                    raise GatewayError("the replay did not finish in time; see the logs in " + str(log_dir))
                time.sleep(0.2)
            progress.update(buffering, completed=daemon.writer.stats.records_committed if daemon.writer else 0)
        failed = [t.device_id for t in trackers if t.process.returncode != 0]
        return _report(console, state, settings, trackers, failed, daemon if keep_running else None)
    finally:
        if daemon is not None:
            daemon.stop()
        for t in trackers:
            if t.process.poll() is None:
                t.process.terminate()
                t.process.wait(5)
        console.print(f"logs: {log_dir}")


def _report(console: Console, state: Path, settings: Any, trackers: list[_Tracker], failed: list[str],
            keep_running: Any) -> int:
    """The gateway's status, then the bundle's trip to central; optionally keep the gateway up."""
    from gateway.state_reader import read_status
    from gateway.status_view import render_status

    status = read_status(state / "gateway")
    render_status(status, console)
    expected = {t.device_id: t.records for t in trackers}
    held = {}
    for device in status["devices"]:
        held[device["device_id"]] = held.get(device["device_id"], 0) + device["received"]
    incomplete = sorted(d for d, n in expected.items() if held.get(d) != n)
    gaps = sum(d["gaps"] for d in status["devices"])
    if failed or incomplete or gaps:
        console.print(f"[red]incomplete[/red]: failed trackers {failed}, short devices {incomplete}, {gaps} gaps")
        return 1
    console.print(f"[green]all {len(trackers)} recordings fully buffered: {sum(held.values())} records, 0 gaps[/green]")
    code = _carry_to_central(console, state, settings, sum(held.values()))
    if keep_running is not None:
        console.print(f"\nThe gateway is still running. Watch and operate it from a second terminal:\n"
                      f"  pulsegate tui --state-dir {state / 'gateway'}\nCtrl-C stops it.")
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            console.print("stopping the gateway")
    return code


def _run_command(command: Any, *args: str) -> None:
    # The same click commands a person would type, so the demo shows
    # exactly what `pulsegate central ...` prints.
    command.main(list(args), standalone_mode=False, prog_name=f"pulsegate central {command.name}")


def _carry_to_central(console: Console, state: Path, gateway_settings: Any, total: int) -> int:
    """Export a signed bundle, import it into central's embedded store, show ledger and incidents."""
    from central.cli import central
    from gateway.bundle_export import export_bundle, signing_key_path

    bundle = state / "demo-gym.bundle"
    console.print(f"\n[bold]Sneakernet[/bold]: exporting a signed bundle to {bundle}")
    with Progress(TextColumn("exporting"), BarColumn(), MofNCompleteColumn(), console=_PROGRESS_CONSOLE,
                  disable=not _PROGRESS_CONSOLE.is_terminal) as progress:
        task = progress.add_task("export", total=total)
        exported = export_bundle(gateway_settings, bundle,
                                 progress=lambda done, _total: progress.update(task, completed=done))
    central_dir = state / "central"
    trusted = central_dir / "trusted-keys"
    trusted.mkdir(parents=True)
    # Provisioning: central trusts this gateway's public key.
    shutil.copy(signing_key_path(gateway_settings.gateway.state_dir).with_suffix(".pub"),
                trusted / f"{gateway_settings.gateway.id}.pub")
    config = state / "central.toml"
    # Absolute: a relative path in a config file is read as beside the file.
    config.write_text(f"[central]\nstate_dir = {json.dumps(str(central_dir.resolve()))}\n")
    console.print(f"\n[bold]Central[/bold] (embedded SQLite store in {central_dir}): importing {exported} records")
    commands = {c: central.commands[c] for c in ("db", "import", "ledger", "detect", "incidents")}
    _run_command(commands["db"], "init", "--config", str(config))
    _run_command(commands["import"], str(bundle), "--config", str(config))
    console.print("\n[bold]Loss ledger[/bold]")
    _run_command(commands["ledger"], "--config", str(config))
    console.print("\n[bold]Detectors[/bold] (one pass)")
    _run_command(commands["detect"], "--once", "--config", str(config))
    console.print("\n[bold]Incidents[/bold] (the recordings' episodes ended long ago, so each is recorded "
                  "resolved; 'pulsegate central incidents show ID' tells when it ended)")
    _run_command(commands["incidents"], "list", "--config", str(config))

    from central.settings import load_settings
    from central.store import open_store

    store = open_store(load_settings(config))
    try:
        entries = store.ledger(None)
    finally:
        store.close()
    held, gaps = sum(e.records for e in entries), sum(e.gaps for e in entries)
    if held != total or gaps:
        console.print(f"[red]central holds {held} of {total} records, {gaps} missing[/red]")
        return 1
    console.print(f"[green]central holds all {held} records with no gap[/green]")
    return 0
