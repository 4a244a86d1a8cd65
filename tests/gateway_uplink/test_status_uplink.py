"""`pulsegate gateway status` tells the uplink's true state: a real daemon, a real tracker, the real broker.

The live connection state is only in the running daemon; the outbox file
keeps the totals of the last run. Status once read the file alone and said
"uplink: down" while the uplink delivered every record.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from replay_harness import PROVENANCE, GatewayProcess, Tracker, run_cli

pytestmark = [pytest.mark.servers]

#: 384 trackpoints: a few seconds to replay at full speed.
RECORDING = PROVENANCE["tcxparser__test"]


def _status(config: Path) -> tuple[dict[str, Any], str]:
    """``gateway status --json`` and the text form, as a user runs them (config only, no --state-dir)."""
    as_json = run_cli("gateway", "status", "--json", "--config", str(config), cwd=config.parent)
    assert as_json.returncode == 0, as_json.stderr
    text = run_cli("gateway", "status", "--config", str(config), cwd=config.parent, env={"COLUMNS": "200"})
    assert text.returncode == 0, text.stderr
    return json.loads(as_json.stdout), text.stdout


def test_status_reports_the_live_uplink_then_not_running(tmp_path: Path, processes: list, amqp_url: str) -> None:
    config = tmp_path / "gateway.toml"
    # A relative state_dir, as a fresh user writes it: status must find the same daemon.
    config.write_text('[gateway]\nid = "gw-status"\nsite = "gym-status"\nstate_dir = "state"\n'
                      '[metrics]\nlisten_address = ""\n[airpods]\nenabled = false\n'
                      f'[uplink]\nenabled = true\namqp_url = "{amqp_url}"\n')
    tracker = Tracker(RECORDING.path, tmp_path / "tty", "--max-rate", log_dir=tmp_path)
    processes.append(tracker)
    tracker.wait_ready()
    gateway = GatewayProcess(tmp_path / "state", [tracker.link], tmp_path, config=config).start()
    processes.append(gateway)
    gateway.wait_socket()
    assert tracker.wait() == 0, tracker.log

    # Wait on the daemon's own word (control socket) until every record is confirmed by the broker.
    deadline = time.monotonic() + 60
    while True:
        live = gateway.call("status")["result"]["uplink"]
        if live["confirmed_records_total"] == RECORDING.samples and live["backlog_records"] == 0:
            break
        assert time.monotonic() < deadline, f"uplink did not deliver the recording: {live}\n{gateway.log}"
        time.sleep(0.2)

    data, text = _status(config)
    uplink = data["uplink"]
    assert (uplink["state"], uplink["connected"], uplink["running"]) == ("connected", True, True)
    assert uplink["confirmed_records_total"] == RECORDING.samples
    assert uplink["broker"] is not None and uplink["last_error"] is None
    assert data["daemon"]["running"] is True and data["daemon"]["pid"] == gateway.process.pid
    assert "uplink: connected, backlog 0 records" in text

    gateway.stop()
    data, text = _status(config)
    uplink = data["uplink"]
    assert (uplink["state"], uplink["connected"], uplink["running"]) == ("stopped", False, False)
    assert uplink["confirmed_records_total"] == RECORDING.samples  # the last run's totals, from the file
    assert "uplink: not running (the daemon is stopped), backlog 0 records" in text
    assert "down" not in text
