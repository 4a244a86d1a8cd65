"""Bad input at the gateway's command line: one clear line, a non-zero exit, no traceback."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from replay_harness import GatewayProcess, run_cli


def _one_clear_line(result, *needles: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    ("config", "needles"),
    [
        ("[serial]\nbaud_rate = 'fast'\n", ("serial.baud_rate", "must be an integer", "'fast'")),
        ("[serial]\nbaud_rat = 9600\n", ("unknown key serial.baud_rat", "baud_rate")),
        ("[gatway]\nid = 'x'\n", ("unknown section [gatway]",)),
        ("[gateway\nid = 'x'\n", ("not valid TOML",)),
        ("[gateway]\nid = 'gym 12'\n", ("[gateway]", "letters, digits")),
        ("[serial]\nmissing_port_at_start = 'maybe'\n", ("missing_port_at_start", "'fail' or 'wait'")),
    ],
    ids=["wrong-type", "unknown-key", "unknown-section", "not-toml", "bad-id", "bad-choice"],
)
def test_bad_config_names_the_key(tmp_path: Path, config: str, needles: tuple[str, ...]) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(config)
    result = run_cli("gateway", "run", "--state-dir", str(tmp_path / "s"), "--port", "/dev/null", "--config", str(path))
    _one_clear_line(result, *needles)


def test_environment_override_is_checked_too(tmp_path: Path) -> None:
    result = run_cli("gateway", "run", "--state-dir", str(tmp_path / "s"), "--port", "/dev/null",
                     env={"PULSEGATE_SERIAL_COMMIT_INTERVAL_MS": "soon"})
    _one_clear_line(result, "PULSEGATE_SERIAL_COMMIT_INTERVAL_MS", "must be an integer")


def test_missing_config_file(tmp_path: Path) -> None:
    result = run_cli("gateway", "run", "--port", "/dev/null", "--config", str(tmp_path / "nope.toml"))
    _one_clear_line(result, "does not exist")


def test_missing_port_fails_at_start(tmp_path: Path) -> None:
    result = run_cli("gateway", "run", "--state-dir", str(tmp_path / "s"), "--port", str(tmp_path / "ttyUSB9"),
                     env={"PULSEGATE_METRICS_LISTEN_ADDRESS": "", "PULSEGATE_AIRPODS_ENABLED": "false"})
    _one_clear_line(result, "cannot open serial port", "ttyUSB9")


def test_missing_port_can_be_waited_for(tmp_path: Path, processes: list) -> None:
    """With serial.missing_port_at_start = wait the daemon starts and reports the port as reopening."""
    (tmp_path / "gateway.toml").write_text(
        '[metrics]\nlisten_address = ""\n[airpods]\nenabled = false\n[serial]\nmissing_port_at_start = "wait"\n'
    )
    gateway = GatewayProcess(tmp_path / "state", [tmp_path / "ttyUSB9"], tmp_path).start()
    processes.append(gateway)
    gateway.wait_socket()
    ports = gateway.call("status")["result"]["ports"]
    assert [(p["path"], p["state"]) for p in ports] == [(str(tmp_path / "ttyUSB9"), "reopening")]


def test_no_port_at_all(tmp_path: Path) -> None:
    result = run_cli("gateway", "run", "--state-dir", str(tmp_path / "s"))
    _one_clear_line(result, "no serial port", "--port")


def test_status_of_an_empty_state_dir(tmp_path: Path) -> None:
    result = run_cli("gateway", "status", "--state-dir", str(tmp_path))
    _one_clear_line(result, "no gateway database", "--state-dir")


def test_second_daemon_on_the_same_state_dir_is_refused(tmp_path: Path, processes: list) -> None:
    (tmp_path / "gateway.toml").write_text(
        '[metrics]\nlisten_address = ""\n[airpods]\nenabled = false\n[serial]\nmissing_port_at_start = "wait"\n'
    )
    first = GatewayProcess(tmp_path / "state", [tmp_path / "tty0"], tmp_path).start()
    processes.append(first)
    first.wait_socket()
    result = run_cli("gateway", "run", "--state-dir", str(tmp_path / "state"), "--port", str(tmp_path / "tty0"),
                     "--config", str(tmp_path / "gateway.toml"))
    _one_clear_line(result, "another gateway is running")
    time.sleep(0.2)
    assert first.process.poll() is None  # the first one is unharmed
