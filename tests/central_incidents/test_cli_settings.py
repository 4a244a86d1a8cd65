"""The ``incidents`` click group on a real SQLite store, and settings validation."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from central.incidents.cli import incidents
from central.incidents.settings import IncidentSettings, PagerDutySettings, RunbookSettings
from central.settings import load_settings
from pulsegate.config import ConfigError


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "central.toml"
    path.write_text(f'[central]\nstate_dir = "{tmp_path / "state"}"\n')
    return str(path)


def run(*args: str) -> str:
    result = CliRunner().invoke(incidents, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_raise_list_show_and_work_an_incident(config, tmp_path):
    out = run("raise", "--config", config, "ledger_gap", "device:TR-1", "gap of 4", "--impact", "high",
              "--actor", "tester")
    incident_id = out.split()[0]
    assert out.split()[1:3] == ["P2", "new"]
    assert (tmp_path / "state" / "incidents.sqlite3").exists()
    listed = json.loads(run("list", "--config", config, "--json"))
    assert [(i["id"], i["priority"], i["state"]) for i in listed] == [(incident_id, "P2", "new")]
    assert run("ack", "--config", config, incident_id, "--actor", "alice") == f"{incident_id} is now acknowledged\n"
    assert run("resolve", "--config", config, incident_id, "--actor", "alice", "--note", "fixed cable").endswith(
        "resolved\n")
    shown = json.loads(run("show", "--config", config, incident_id, "--json"))
    assert [(e["actor"], e["action"], e["note"]) for e in shown["timeline"]] == [
        ("tester", "create", ""), ("alice", "ack", ""), ("alice", "resolve", "fixed cable")]
    resolve_line = run("show", "--config", config, incident_id).splitlines()[-1]
    resolved_at = shown["incident"]["resolved_at_iso"]
    assert resolve_line.endswith(f"alice  resolve  resolved_at: None → {resolved_at}, "
                                 "state: 'acknowledged' → 'resolved'  fixed cable")
    assert json.loads(run("list", "--config", config, "--open", "--json")) == []


def test_errors_are_one_line(config):
    run("raise", "--config", config, "k", "s", "x")
    result = CliRunner().invoke(incidents, ["close", "--config", config, "INC-missing", "--actor", "a"])
    assert result.exit_code == 1
    assert result.output == "Error: no incident 'INC-missing'; list them with 'pulsegate central incidents list'\n"
    incident_id = json.loads(run("list", "--config", config, "--json"))[0]["id"]
    result = CliRunner().invoke(incidents, ["close", "--config", config, incident_id, "--actor", "a"])
    assert result.exit_code == 1 and "cannot close incident" in result.output


@pytest.mark.parametrize("command", [["list"], ["show", "INC-1"], ["ack", "INC-1", "--actor", "a"]])
def test_reading_a_store_that_is_not_there_creates_nothing(tmp_path, command):
    """A wrong state dir is one line naming the path, exit 2, and no empty store left behind."""
    state = tmp_path / "typo"
    config = tmp_path / "central.toml"
    config.write_text(f'[central]\nstate_dir = "{state}"\n')
    pulsegate = Path(sys.executable).parent / "pulsegate"
    result = subprocess.run(
        [str(pulsegate), "central", "incidents", *command, "--config", str(config)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"pulsegate: error: no incident store at '{state / 'incidents.sqlite3'}'; check [central] state_dir "
        "(the store is made by 'central incidents serve', 'detect' or 'raise')\n"
    )
    assert not state.exists()


def test_every_command_has_help():
    for name, command in incidents.commands.items():
        assert command.help, name
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{name} {param.name}"


def test_settings_from_toml_and_environment(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[incidents]\nescalation_fraction = 0.5\n[incidents.response_target_s]\n'
                    'P1 = 60\nP2 = 120\nP3 = 180\nP4 = 240\nP5 = 300\n')
    settings = load_settings(path)
    assert settings.incidents.escalation_fraction == 0.5 and settings.incidents.response_target_s["P3"] == 180
    path.write_text('[incidents]\nlisten_address = "0.0.0.0:9465"\n')
    with pytest.raises(ConfigError, match="not a loopback address"):
        load_settings(path)


@pytest.mark.parametrize(("factory", "message"), [
    (lambda: IncidentSettings(escalation_fraction=1.5), "escalation_fraction must be between 0 and 1"),
    (lambda: IncidentSettings(response_target_s={"P1": 1}), "response_target_s lacks P2, P3, P4, P5"),
    (lambda: IncidentSettings(listen_address="nonsense"), "must be HOST:PORT"),
    (lambda: PagerDutySettings(routing_keys={"ops": "short"}), "32-character integration key"),
    (lambda: PagerDutySettings(enabled=True), "default_service 'default' has no entry"),
    (lambda: PagerDutySettings(page_priorities=["P9"]), "unknown ['P9']"),
    (lambda: RunbookSettings(runbooks={"k": {"directory": "d", "policy": "yolo"}}), "policy must be one of"),
    (lambda: RunbookSettings(runbooks={"k": {"policy": "auto"}}), "must be a table with a 'directory'"),
])
def test_bad_settings_are_refused(factory, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        factory()


@pytest.mark.servers
def test_reading_a_cassandra_keyspace_that_is_not_there_creates_nothing(tmp_path, cassandra_store):
    """A mistyped keyspace is refused in one line (exit 2); it must not become a new keyspace."""
    keyspace = f"pg_typo_{uuid.uuid4().hex[:10]}"
    config = tmp_path / "central.toml"
    config.write_text(f'[central]\nstate_dir = "{tmp_path}"\n[store]\nbackend = "cassandra"\n'
                      f'[cassandra]\nkeyspace = "{keyspace}"\n')
    pulsegate = Path(sys.executable).parent / "pulsegate"
    result = subprocess.run([str(pulsegate), "central", "incidents", "list", "--config", str(config)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"pulsegate: error: no incident tables in Cassandra keyspace '{keyspace}'; check [cassandra] keyspace "
        "(they are made by 'central incidents serve', 'detect' or 'raise')\n"
    )
    # The session's own store is connected to the same node: ask it whether the keyspace appeared.
    cassandra_store._cluster.refresh_schema_metadata()
    assert keyspace not in cassandra_store._cluster.metadata.keyspaces
