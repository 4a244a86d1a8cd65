"""``pulsegate gateway``: the appliance daemon, its status and bundle export."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from gateway.settings import GatewaySettings, load_settings

log = logging.getLogger(__name__)

_STATE_DIR_HELP = "State directory (SQLite outbox, keys, control socket) [default: gateway.state_dir]."


def _settings(config: str | None, state_dir: str | None) -> GatewaySettings:
    settings = load_settings(config)
    if state_dir is not None:
        settings.gateway.state_dir = Path(state_dir)
    return settings


@click.group()
def gateway() -> None:
    """The gateway daemon: serial ingest, durable outbox, uplink."""


@gateway.command()
@click.option("--state-dir", type=click.Path(file_okay=False), help=_STATE_DIR_HELP)
@click.option("--port", "ports", multiple=True, metavar="PATH", help="Serial port to read (repeat for more).")
@click.option("--config", type=click.Path(dir_okay=False), help="TOML config file.")
def run(state_dir: str | None, ports: tuple[str, ...], config: str | None) -> None:
    """Run the gateway daemon until SIGTERM or Ctrl-C."""
    from gateway._daemon import GatewayDaemon

    # A daemon's events (ports, trackers, alarms, outages) are worth a line
    # each in the journal even without -v.
    root = logging.getLogger()
    root.setLevel(min(root.level, logging.INFO))

    daemon = GatewayDaemon(_settings(config, state_dir), list(ports))
    try:
        daemon.start()
    except BaseException:
        daemon.stop()
        raise
    daemon.run_forever()


@gateway.command()
@click.option("--state-dir", type=click.Path(file_okay=False), help=_STATE_DIR_HELP)
@click.option("--config", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def status(state_dir: str | None, config: str | None, as_json: bool) -> None:
    """Show trackers, the outbox and quarantine (works with or without the daemon)."""
    from gateway.state_reader import read_status
    from gateway.status_view import render_status

    settings = _settings(config, state_dir)
    data = read_status(settings.gateway.state_dir)
    data["daemon"], data["uplink"] = _daemon_and_uplink(Path(settings.gateway.state_dir))
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        render_status(data)


def _daemon_and_uplink(state_dir: Path) -> tuple[dict, dict]:
    """The daemon's state and the uplink's, as true as can be known from here.

    The live connection state is only in the running daemon (the file keeps
    the totals of the last run), so a running daemon is asked over its
    control socket; a stopped one has no uplink running, which is not "down".
    """
    from gateway.state_reader import (
        DaemonUnreachableError,
        daemon_state,
        live_daemon_status,
        recorded_identity,
    )
    from gateway.uplink import uplink_status_from_file

    daemon = daemon_state(state_dir)
    if daemon["running"]:
        try:
            live = live_daemon_status(state_dir)
        except DaemonUnreachableError as exc:
            log.warning("%s; the uplink state is unknown", exc)
            uplink = uplink_status_from_file(state_dir / "gateway.sqlite")
            uplink.update(state="unknown", running=None, connected=None)
            return daemon, uplink
        return {**daemon, **live["daemon"]}, live["uplink"]
    uplink = uplink_status_from_file(state_dir / "gateway.sqlite")
    disabled = recorded_identity(state_dir).get("uplink") == "disabled"
    uplink["state"] = "disabled" if disabled else "stopped"  # "down" would suggest a broker outage
    return daemon, uplink


@gateway.command()
@click.option("--state-dir", type=click.Path(file_okay=False), help=_STATE_DIR_HELP)
@click.option("--config", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Bundle file to write, e.g. on a USB stick.")
def export(state_dir: str | None, config: str | None, out: Path) -> None:
    """Export the buffered records to a signed bundle file for central."""
    from gateway.bundle_export import export_bundle

    settings = _settings(config, state_dir)
    count = export_bundle(settings, out, progress=sys.stderr.isatty())
    click.echo(f"exported {count} records to {out}", err=True)


@gateway.command("public-key")
@click.option("--state-dir", type=click.Path(file_okay=False), help=_STATE_DIR_HELP)
@click.option("--config", type=click.Path(dir_okay=False), help="TOML config file.")
def public_key(state_dir: str | None, config: str | None) -> None:
    """Print the gateway's bundle-signing public key (PEM) for central's trusted keys.

    Creates the key pair on first use. Save the output as
    <trusted_keys_dir>/<gateway id>.pub on central.
    """
    from gateway.bundle_export import ensure_signing_key, signing_key_path
    from gateway.state_reader import StateDirError

    settings = _settings(config, state_dir)
    if not (Path(settings.gateway.state_dir) / "gateway.sqlite").exists():
        raise StateDirError(  # a usage error: exits 2, like the other wrong --state-dir
            f"no gateway database in {str(settings.gateway.state_dir)!r}; pass the --state-dir the gateway runs with"
        )
    ensure_signing_key(settings.gateway.state_dir)
    click.echo(signing_key_path(settings.gateway.state_dir).with_suffix(".pub").read_text(), nl=False)


@gateway.command()
@click.option("--state-dir", type=click.Path(file_okay=False), help=_STATE_DIR_HELP)
@click.option("--config", type=click.Path(dir_okay=False), help="TOML config file.")
def salvage(state_dir: str | None, config: str | None) -> None:
    """Rebuild a damaged gateway.sqlite from every row still readable (the daemon must be stopped).

    The damaged file is kept as gateway.damaged.sqlite beside the new one.
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn

    from gateway._salvage import salvage_database
    from gateway.errors import GatewayError
    from gateway.state_reader import daemon_state

    settings = _settings(config, state_dir)
    state = Path(settings.gateway.state_dir)
    if daemon_state(state)["running"]:
        raise GatewayError(f"the gateway daemon is running on {str(state)!r}; stop it before salvaging")
    # The bar goes to stderr, and only on a terminal: piped, it would leave a
    # blank line ahead of the summary on stdout.
    stderr = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), transient=True, console=stderr,
                  disable=not stderr.is_terminal) as bar:
        tasks: dict[str, int] = {}

        def progress(table: str, done: int, total: int) -> None:
            if table not in tasks:
                tasks[table] = bar.add_task(f"copying {table}", total=total)
            bar.update(tasks[table], completed=done)

        result = salvage_database(state, progress)
    for table, copied in result.copied.items():
        lost = result.lost[table]
        fate = "unreadable, nothing copied" if lost < 0 else f"{copied} rows copied, {lost} unreadable"
        click.echo(f"{table}: {fate}")
    click.echo(f"the damaged file is kept as {result.damaged_path}")
