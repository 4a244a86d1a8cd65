"""One exit-code convention across ``pulsegate``: 2 when the command line or the
configuration is wrong, 1 when the run itself failed (a server unreachable,
input refused). Each case runs the installed command as a real subprocess."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from central_ingest.testdata import run_cli, write_config

Case = Callable[[Path], list[str]]


def _central(tmp_path: Path, *args: str, **sections: dict) -> list[str]:
    config = write_config(tmp_path / "central.toml", tmp_path / "state", **sections)
    return ["central", *args, "--config", str(config)]


def _garbage_recording(tmp_path: Path) -> list[str]:
    recording = tmp_path / "garbage.fit"
    recording.write_bytes(bytes(range(256)) * 4)
    return ["shim", "replay", str(recording), "--create-pty", str(tmp_path / "tty"), "--timeout", "5"]


USAGE_OR_CONFIG: dict[str, tuple[Case, str]] = {
    "unknown-option": (lambda t: ["central", "ledger", "--bogus"], "No such option"),
    "missing-config-file": (lambda t: ["central", "ledger", "--config", str(t / "nope.toml")], "does not exist"),
    "bad-config-value": (lambda t: _central(t, "ledger", store={"backend": "oracle"}), "store.backend"),
    "no-store-yet": (lambda t: _central(t, "ledger"), "no central store at"),
    # central incidents wraps a config error in a ClickException: still 2.
    "incidents-missing-config": (
        lambda t: ["central", "incidents", "list", "--config", str(t / "nope.toml")], "does not exist"
    ),
    "gateway-public-key-wrong-state-dir": (
        lambda t: ["gateway", "public-key", "--state-dir", str(t)], "no gateway database"
    ),
    "no-incident-store-yet": (lambda t: _central(t, "incidents", "list"), "no incident store at"),
    "negative-prefetch": (lambda t: _central(t, "ingest", ingest={"prefetch_count": -5}), "ingest.prefetch_count"),
    "gateway-export-wrong-state-dir": (
        lambda t: ["gateway", "export", "--state-dir", str(t), "--out", str(t / "b.pgbundle")], "no gateway database"
    ),
    "no-trusted-keys-folder": (lambda t: _import_without_keys(t), "trusted keys folder"),
    "demo-into-a-foreign-folder": (lambda t: _demo_into_foreign_folder(t), "not an earlier demo's folder"),
    "gateway-status-wrong-state-dir": (lambda t: ["gateway", "status", "--state-dir", str(t)], "no gateway database"),
}

RUNTIME_FAILURE: dict[str, tuple[Case, str]] = {
    "broker-unreachable": (
        lambda t: _central(t, "dead-letters", "list", amqp={"url": "amqp://guest:guest@127.0.0.1:1/"}),
        "cannot reach the broker at 127.0.0.1:1",
    ),
    "cassandra-unreachable": (
        lambda t: _central(
            t, "ledger", store={"backend": "cassandra"}, cassandra={"hosts": ["127.0.0.1"], "port": 1}
        ),
        "cannot reach Cassandra at 127.0.0.1:1",
    ),
    "bundle-refused": (lambda t: _bad_bundle(t), "refused"),
    "recording-refused": (_garbage_recording, "cannot parse FIT"),
    "no-such-incident": (lambda t: _missing_incident(t), "no incident 'INC-missing'"),
}


def _missing_incident(tmp_path: Path) -> list[str]:
    """Closing an incident that is not in an existing store (raising one makes the store)."""
    raised = run_cli(*_central(tmp_path, "incidents", "raise", "ledger_gap", "device:TR-1", "gap", "--actor", "a"))
    assert raised.returncode == 0, raised.stderr
    return _central(tmp_path, "incidents", "close", "INC-missing", "--actor", "a")


def _import_without_keys(tmp_path: Path) -> list[str]:
    args = _central(tmp_path, "import", str(tmp_path / "some.pgbundle"))
    assert run_cli("central", "db", "init", "--config", args[-1]).returncode == 0
    (tmp_path / "some.pgbundle").write_bytes(b"Obj\x01" + b"\x00" * 300)
    return args


def _demo_into_foreign_folder(tmp_path: Path) -> list[str]:
    (tmp_path / "notes.txt").write_text("not a demo's\n")
    return ["demo", "--state-dir", str(tmp_path)]


def _bad_bundle(tmp_path: Path) -> list[str]:
    args = _central(tmp_path, "import", str(tmp_path / "bad.pgbundle"))
    assert run_cli("central", "db", "init", "--config", args[-1]).returncode == 0
    (tmp_path / "state" / "trusted-keys").mkdir()
    (tmp_path / "bad.pgbundle").write_bytes(b"Obj\x01" + b"\x00" * 300)
    return args


@pytest.mark.parametrize("case", sorted(USAGE_OR_CONFIG))
def test_usage_and_config_errors_exit_2(tmp_path: Path, case: str) -> None:
    make, needle = USAGE_OR_CONFIG[case]
    result = run_cli(*make(tmp_path))
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("case", sorted(RUNTIME_FAILURE))
def test_runtime_failures_exit_1(tmp_path: Path, case: str) -> None:
    make, needle = RUNTIME_FAILURE[case]
    result = run_cli(*make(tmp_path))
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("pulsegate: error: ") and needle in lines[0], result.stderr
