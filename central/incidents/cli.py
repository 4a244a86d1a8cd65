"""``pulsegate central incidents …``: the incident queue from the command line.

The commands work directly on the configured store (SQLite file or Cassandra),
so they work whether or not ``serve`` is running.
"""

from __future__ import annotations

import getpass
import json
import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from central.errors import CentralError
from central.incidents._daemon import IncidentDaemon, build_service
from central.incidents._http import incident_view
from central.incidents._model import State, iso8601
from central.incidents._service import IncidentService
from central.incidents._store import IncidentFilter
from pulsegate.config import ConfigError

__all__ = ["incidents"]

logger = logging.getLogger(__name__)

_config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Central's TOML config file (defaults plus PULSEGATE_* environment variables without it).",
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
_actor_option = click.option(
    "--actor", default=lambda: getpass.getuser(), show_default="your login name",
    help="Who is doing this, for the audit trail.",
)
_note_option = click.option("--note", default="", help="A note for the incident's timeline.")


def _service(config_path: Path | None, *, create: bool = False) -> IncidentService:
    """The incident service; only ``create`` makes an embedded store that is not there yet.

    Reading a store that does not exist is a wrong state dir, not an empty
    list: say so in one line and leave no empty file behind.
    """
    from central.settings import (
        load_settings,  # imported late: central.settings imports this package
    )

    try:
        return build_service(load_settings(config_path), create=create)
    except (ConfigError, CentralError) as exc:
        raise click.ClickException(str(exc)) from None


def _run(action: Callable[[], Any]) -> Any:
    try:
        return action()
    except CentralError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def incidents() -> None:
    """ITIL incident queue: list, show and work incidents; serve the API."""


@incidents.command("list")
@_config_option
@click.option("--state", "states", multiple=True,
              type=click.Choice([state.value for state in State]),
              help="Only these states (repeatable).")
@click.option("--open", "only_open", is_flag=True, help="Only open incidents (not resolved or closed).")
@click.option("--kind", default=None, help="Only this kind.")
@click.option("--subject", default=None, help="Only this subject, e.g. gateway:gym-12.")
@click.option("--priority", default=None, type=click.Choice(["P1", "P2", "P3", "P4", "P5"]),
              help="Only this priority.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1),
              help="At most this many, newest first.")
@_json_option
def list_command(config_path: Path | None, states: tuple[str, ...], only_open: bool, kind: str | None,
                 subject: str | None, priority: str | None, limit: int, as_json: bool) -> None:
    """List incidents, newest first."""
    service = _service(config_path)
    chosen = ["new", "acknowledged", "in_progress", "on_hold"] if only_open else list(states)
    found = _run(lambda: service.list_incidents(IncidentFilter(chosen or None, kind, subject, priority, limit)))
    if as_json:
        click.echo(json.dumps([incident_view(service, i) for i in found], indent=2, default=str))
        return
    if not found:
        click.echo("no incidents")
    for incident in found:
        view = incident_view(service, incident)
        flags = (" MAJOR" if incident.major else "") + (f" x{incident.repeat_count}" if incident.repeat_count > 1 else "")
        click.echo(f"{incident.id}  {incident.priority}  {incident.state.value:<12}  {view['created_at_iso']}  "
                   f"{incident.kind} on {incident.subject}{flags}: {incident.summary}")


@incidents.command("show")
@_config_option
@click.argument("incident_id")
@_json_option
def show_command(config_path: Path | None, incident_id: str, as_json: bool) -> None:
    """Show one incident with its SLA deadlines and timeline."""
    service = _service(config_path)
    incident = _run(lambda: service.get(incident_id))
    view, timeline = incident_view(service, incident), _run(lambda: service.timeline(incident_id))
    if as_json:
        click.echo(json.dumps({"incident": view, "timeline": [e.to_doc() for e in timeline]}, indent=2, default=str))
        return
    click.echo(f"{incident.id}  {incident.priority} ({incident.impact} impact, {incident.urgency} urgency)  "
               f"{incident.state.value}{'  MAJOR' if incident.major else ''}")
    click.echo(f"  {incident.kind} on {incident.subject}: {incident.summary}")
    click.echo(f"  group {incident.assignment_group}, seen {incident.repeat_count}x, problem {incident.problem_id or '-'}, "
               f"runbook {incident.runbook_status or '-'}")
    for target, deadline in view["deadlines"].items():
        click.echo(f"  {target} due {deadline['at']} ({deadline['seconds_left']:.0f} s left)")
    for entry in timeline:
        changed = ", ".join(f"{k}: {_shown(k, v[0])} → {_shown(k, v[1])}" for k, v in entry.changes.items() if k != "details")
        click.echo(f"  {entry.to_doc()['at_iso']}  {entry.actor}  {entry.action}  {changed}  {entry.note}".rstrip())


def _shown(key: str, value: Any) -> str:
    """A timeline value for people: times as ISO 8601."""
    if key.endswith("_at") and isinstance(value, (int, float)):
        return str(iso8601(value))
    return repr(value)


def _action_command(name: str, method: str, help_text: str) -> None:
    @incidents.command(name, help=help_text)
    @_config_option
    @click.argument("incident_id")
    @_actor_option
    @_note_option
    def command(config_path: Path | None, incident_id: str, actor: str, note: str) -> None:
        service = _service(config_path)
        incident = _run(lambda: getattr(service, method)(incident_id, actor=actor, note=note))
        click.echo(f"{incident.id} is now {incident.state.value}")


_action_command("ack", "acknowledge", "Acknowledge a new incident (meets its response target).")
_action_command("start", "start", "Mark an incident in progress (also resumes one on hold).")
_action_command("hold", "hold", "Put an incident on hold; its resolution clock pauses.")
_action_command("resolve", "resolve", "Resolve an incident: service is restored.")
_action_command("close", "close", "Close a resolved incident (final).")
_action_command("reopen", "reopen", "Reopen a resolved incident: the fix did not hold.")
_action_command("major", "declare_major", "Declare an open incident a major incident.")
_action_command("approve", "approve_runbook", "Approve applying the incident's planned runbook.")


@incidents.command("raise")
@_config_option
@click.argument("kind")
@click.argument("subject")
@click.argument("summary")
@click.option("--impact", type=click.Choice(["high", "medium", "low"]), default="medium", show_default=True,
              help="How much of the service is affected.")
@click.option("--urgency", type=click.Choice(["high", "medium", "low"]), default="medium", show_default=True,
              help="How fast it hurts.")
@click.option("--gateway-id", default=None, help="Gateway to notify of this incident.")
@_actor_option
def raise_command(config_path: Path | None, kind: str, subject: str, summary: str, impact: str, urgency: str,
                  gateway_id: str | None, actor: str) -> None:
    """Raise an incident by hand (or count a repeat on the open one)."""
    service = _service(config_path, create=True)
    incident = _run(lambda: service.raise_incident(kind, subject, summary, impact=impact, urgency=urgency,
                                                    gateway_id=gateway_id, actor=actor))
    click.echo(f"{incident.id}  {incident.priority}  {incident.state.value}  seen {incident.repeat_count}x")


@incidents.command("serve")
@_config_option
def serve_command(config_path: Path | None) -> None:
    """Serve the HTTP API, Alertmanager webhook and /metrics, and run SLA timers, paging and runbooks."""
    from central.downlink import notifier_from_settings
    from central.settings import load_settings

    try:
        settings = load_settings(config_path)
        service = build_service(settings)
        # Gateway notices go out over RabbitMQ when [amqp] url is configured;
        # without it they stay queued in the store, as in the embedded setup.
        notifier = notifier_from_settings(settings, config_path)
        daemon = IncidentDaemon(service, Path(settings.central.state_dir) / "runbooks", gateway_notifier=notifier)
    except (ConfigError, CentralError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {settings.incidents.listen_address}: {exc}") from None
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    daemon.start()
    click.echo(f"incident service on {daemon.http.url} (Ctrl-C to stop)")
    if notifier is not None:
        click.echo(f"gateway notices go to {notifier.broker}")
    done.wait()
    daemon.stop()
    if notifier is not None:
        notifier.close()
