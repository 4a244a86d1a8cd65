"""``pulsegate central`` as a fresh user meets it: reading commands on a missing store,
import order and re-import counts, untrusted keys, and tables that are never cropped.

Every command runs as a real subprocess on real SQLite files; the terminal
cases run on a real pseudo-terminal of a known width.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import sqlite3
import struct
import subprocess
import termios
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.ingest import import_bundle
from central.store import StoreError
from central.store._sqlite import SqliteStore
from central_ingest.testdata import PULSEGATE, REPO, make_record, run_cli, write_config
from firmware_shim.bundle_format import (
    generate_signing_key,
    load_trusted_keys,
    write_bundle,
    write_public_key,
)

BOOT_A, BOOT_B = str(uuid.UUID(int=20)), str(uuid.UUID(int=21))
#: 64 characters, the longest device id a record may carry, with markup-like brackets.
LONG_DEVICE = "tracker-[bold]-" + "x" * 40 + "-end-0001"
LONG_GATEWAY = "gateway-of-the-very-long-named-gym-" + "y" * 20 + "-tail"
assert len(LONG_DEVICE) == 64


@pytest.fixture
def central(tmp_path: Path) -> tuple[Path, Path, Ed25519PrivateKey]:
    """A central config with an initialised SQLite store, and a gateway key it trusts."""
    config = write_config(tmp_path / "central.toml", tmp_path / "state")
    assert run_cli("central", "db", "init", "--config", str(config)).returncode == 0
    key = generate_signing_key(tmp_path / "gw" / "bundle-signing.key")
    trusted = tmp_path / "state" / "trusted-keys"
    trusted.mkdir()
    write_public_key(key.public_key(), trusted / "gw-1.pub")
    return config, trusted, key


def _bundle(path: Path, key: Ed25519PrivateKey, records: list[dict], gateway: str = "gw-1") -> Path:
    write_bundle(path, records, gateway_id=gateway, site="gym-a", signing_key=key)
    return path


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def _store_rows(config: Path) -> int:
    path = config.parent / "state" / "telemetry.sqlite3"
    return sqlite3.connect(path).execute("SELECT count(*) FROM telemetry").fetchone()[0]


# --- reading commands never create a store ------------------------------------------


@pytest.mark.parametrize(
    "command",
    [("ledger",), ("ledger", "--json"), ("fleet",), ("fleet", "--json"), ("import", "BUNDLE")],
    ids=["ledger", "ledger-json", "fleet", "fleet-json", "import"],
)
def test_reading_commands_refuse_a_missing_store_and_create_nothing(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    state = tmp_path / "wrong" / "state"
    config = write_config(tmp_path / "central.toml", state)
    bundle = tmp_path / "some.pgbundle"
    bundle.write_bytes(b"not looked at: the store is checked first")
    args = [str(bundle) if a == "BUNDLE" else a for a in command]
    result = run_cli("central", *args, "--config", str(config))
    assert result.returncode == 2
    line = _one_line(result)
    assert line == (
        f"pulsegate: error: no central store at '{state / 'telemetry.sqlite3'}'; "
        "run 'pulsegate central db init' or check [central] state_dir"
    )
    assert result.stdout == ""
    assert not (tmp_path / "wrong").exists(), "a reading command created the state dir"


def test_missing_store_names_sqlite_path_when_that_is_set(tmp_path: Path) -> None:
    store_file = tmp_path / "elsewhere" / "t.sqlite3"
    config = write_config(tmp_path / "c.toml", tmp_path / "state", store={"sqlite_path": str(store_file)})
    line = _one_line(run_cli("central", "ledger", "--config", str(config)))
    assert f"no central store at '{store_file}'" in line and "check [store] sqlite_path" in line
    assert not store_file.parent.exists() and not (tmp_path / "state").exists()


def test_writers_still_create_the_store(tmp_path: Path) -> None:
    """db init and the library's default open make the file and its folder, as before."""
    config = write_config(tmp_path / "central.toml", tmp_path / "new" / "state")
    assert run_cli("central", "db", "init", "--config", str(config)).returncode == 0
    assert (tmp_path / "new" / "state" / "telemetry.sqlite3").is_file()
    SqliteStore(tmp_path / "other" / "t.sqlite3").close()
    assert (tmp_path / "other" / "t.sqlite3").is_file()
    with pytest.raises(StoreError, match="no central store"):
        SqliteStore(tmp_path / "third" / "t.sqlite3", create=False)
    assert not (tmp_path / "third").exists()


# --- import: the store first, then the bundle ------------------------------------


def _tableless_store(tmp_path: Path) -> Path:
    """A config whose store file exists but was never initialised (no central tables)."""
    config = write_config(tmp_path / "central.toml", tmp_path / "state")
    (tmp_path / "state").mkdir()
    with sqlite3.connect(tmp_path / "state" / "telemetry.sqlite3") as conn:
        conn.execute("CREATE TABLE unrelated (x)")
    return config


def test_import_checks_the_schema_before_reading_the_bundle(tmp_path: Path) -> None:
    """A damaged bundle into a store without tables: the store is what is reported."""
    config = _tableless_store(tmp_path)
    damaged = tmp_path / "damaged.pgbundle"
    damaged.write_bytes(b"Obj\x01" + b"\x00" * 500)  # would be refused as "no signature trailer"
    result = run_cli("central", "import", str(damaged), "--config", str(config))
    assert result.returncode == 2
    line = _one_line(result)
    assert "has no tables; run 'pulsegate central db init'" in line, line
    assert "refused" not in line


def test_import_bundle_probes_the_schema_first(tmp_path: Path) -> None:
    """The library call too: a store without tables fails before the bundle is opened."""
    store = SqliteStore(tmp_path / "t.sqlite3")  # created, never initialised
    with pytest.raises(StoreError, match="has no tables"):
        import_bundle(store, tmp_path / "does-not-exist.pgbundle", {})


# --- re-import counts ------------------------------------------------------------


def _records(device: str, boot: str, seqs: range | list[int]) -> list[dict]:
    return [make_record(device, boot, s) for s in seqs]


def test_reimport_reports_new_and_already_held(
    tmp_path: Path, central: tuple[Path, Path, Ed25519PrivateKey]
) -> None:
    config, _, key = central
    held_a = [s for s in range(1, 501) if not 301 <= s <= 310]  # dev-a misses 301..310
    first = _bundle(
        tmp_path / "first.pgbundle", key, _records("dev-a", BOOT_A, held_a) + _records("dev-b", BOOT_B, range(1, 151))
    )
    out1 = run_cli("central", "import", str(first), "--config", str(config))
    assert out1.returncode == 0, out1.stderr
    assert out1.stdout.startswith("imported 640 new records (0 already held) from gateway gw-1 ")
    ledger1 = json.loads(run_cli("central", "ledger", "--json", "--config", str(config)).stdout)

    out2 = run_cli("central", "import", str(first), "--config", str(config))
    assert out2.returncode == 0, out2.stderr
    assert out2.stdout.startswith("imported 0 new records (640 already held) from gateway gw-1 ")
    assert json.loads(run_cli("central", "ledger", "--json", "--config", str(config)).stdout) == ledger1

    # dev-a 295..320 (301..310 were missing), dev-b on a new boot, one record twice.
    later = _records("dev-a", BOOT_A, range(295, 321)) + _records("dev-b", BOOT_A, range(1, 6))
    later.append(make_record("dev-b", BOOT_A, 3))
    out3 = run_cli("central", "import", str(_bundle(tmp_path / "later.pgbundle", key, later)), "--config", str(config))
    assert out3.returncode == 0, out3.stderr
    new = len(range(301, 311)) + 5
    held = len(range(295, 321)) - len(range(301, 311))
    assert out3.stdout.startswith(f"imported {new} new records ({held} already held) from gateway gw-1 ")
    assert out3.stdout.rstrip().endswith("; 1 records appear more than once in the bundle")
    assert _store_rows(config) == 640 + new


def test_import_count_uses_thousands_separators(
    tmp_path: Path, central: tuple[Path, Path, Ed25519PrivateKey]
) -> None:
    config, _, key = central
    bundle = _bundle(tmp_path / "big.pgbundle", key, _records("dev-c", BOOT_A, range(1, 12_346)))
    assert run_cli("central", "import", str(bundle), "--config", str(config)).returncode == 0
    again = run_cli("central", "import", str(bundle), "--config", str(config))
    assert again.stdout.startswith("imported 0 new records (12,345 already held)"), again.stdout


# --- untrusted keys ------------------------------------------------------------------


def test_untrusted_key_names_the_gateway_and_the_key_file(
    tmp_path: Path, central: tuple[Path, Path, Ed25519PrivateKey]
) -> None:
    config, trusted, _ = central
    stranger = Ed25519PrivateKey.generate()
    bundle = _bundle(tmp_path / "gw9.pgbundle", stranger, _records("dev", BOOT_A, range(1, 4)), gateway="gw-9")
    result = run_cli("central", "import", str(bundle), "--config", str(config))
    assert result.returncode == 1
    line = _one_line(result)
    assert "gateway 'gw-9'" in line and f"'{trusted / 'gw-9.pub'}'" in line, line
    assert line.endswith("nothing was imported")
    assert _store_rows(config) == 0


def test_renewed_key_names_the_file_to_replace(
    tmp_path: Path, central: tuple[Path, Path, Ed25519PrivateKey]
) -> None:
    config, trusted, _ = central
    renewed = Ed25519PrivateKey.generate()
    bundle = _bundle(tmp_path / "gw1.pgbundle", renewed, _records("dev", BOOT_A, range(1, 4)))
    line = _one_line(run_cli("central", "import", str(bundle), "--config", str(config)))
    assert "gateway 'gw-1'" in line and "not trusted" in line
    assert f"replace '{trusted / 'gw-1.pub'}'" in line, line


def test_library_caller_without_a_folder_still_gets_the_gateway(
    tmp_path: Path, central: tuple[Path, Path, Ed25519PrivateKey]
) -> None:
    _, trusted, _ = central
    stranger = Ed25519PrivateKey.generate()
    bundle = _bundle(tmp_path / "gw9.pgbundle", stranger, _records("dev", BOOT_A, range(1, 4)), gateway="gw-9")
    store = SqliteStore(tmp_path / "lib.sqlite3")
    store.init_schema()
    with pytest.raises(Exception, match=r"gateway 'gw-9'.*\[bundle\] trusted_keys_dir/gw-9\.pub"):
        import_bundle(store, bundle, dict(load_trusted_keys(trusted)))


# --- tables: piped whole, folded on a terminal ------------------------------------


def _import_long_ids(tmp_path: Path, central: tuple[Path, Path, Ed25519PrivateKey]) -> Path:
    config, trusted, _ = central
    key = Ed25519PrivateKey.generate()  # one key per gateway: trust is per gateway
    write_public_key(key.public_key(), trusted / f"{LONG_GATEWAY}.pub")
    records = _records(LONG_DEVICE, BOOT_A, [s for s in range(1, 201) if s not in (50, 51, 120)])
    bundle = _bundle(tmp_path / "long.pgbundle", key, records, gateway=LONG_GATEWAY)
    assert run_cli("central", "import", str(bundle), "--config", str(config)).returncode == 0
    return config


@pytest.mark.parametrize("columns", [None, "80"], ids=["COLUMNS-unset", "COLUMNS-80"])
def test_piped_ledger_and_fleet_print_whole_rows(
    tmp_path: Path, central: tuple[Path, Path, Ed25519PrivateKey], columns: str | None
) -> None:
    config = _import_long_ids(tmp_path, central)
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    if columns:
        env["COLUMNS"] = columns
    ledger = subprocess.run([*PULSEGATE, "central", "ledger", "--config", str(config)],
                            capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert ledger.returncode == 0, ledger.stderr
    row = next(line for line in ledger.stdout.splitlines() if LONG_DEVICE in line)
    cells = _cells(row)
    assert cells == [LONG_DEVICE, BOOT_A[:8], LONG_GATEWAY, "197", "1", "200", "3", "50-51, 120"]

    fleet = subprocess.run([*PULSEGATE, "central", "fleet", "--config", str(config)],
                           capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert fleet.returncode == 0, fleet.stderr
    tracker_row = next(line for line in fleet.stdout.splitlines() if LONG_DEVICE in line)
    assert _cells(tracker_row)[:2] == [LONG_DEVICE, LONG_GATEWAY]
    gateway_row = next(line for line in fleet.stdout.splitlines() if line.startswith(f"│ {LONG_GATEWAY} "))
    assert _cells(gateway_row)[:2] == [LONG_GATEWAY, "gym-a"]


def _cells(row: str) -> list[str]:
    """The cells of one table line drawn with ``│`` borders."""
    return [cell.strip() for cell in row.strip()[1:-1].split("│")]


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def run_on_terminal(args: list[str], columns: int) -> str:
    """Run a command with stdout on a real pseudo-terminal ``columns`` wide; its output, uncoloured."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen(args, stdout=slave, stderr=subprocess.PIPE, cwd=REPO,
                            env={**env, "TERM": "xterm-256color"})
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the far end closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
    return _ANSI.sub("", b"".join(chunks).decode()).replace("\r\n", "\n")


def test_ledger_on_a_narrow_terminal_folds_ids_and_fits(
    tmp_path: Path, central: tuple[Path, Path, Ed25519PrivateKey]
) -> None:
    config = _import_long_ids(tmp_path, central)
    out = run_on_terminal([*PULSEGATE, "central", "ledger", "--config", str(config)], columns=80)
    body = [line for line in out.splitlines() if line.startswith("│")]  # the header uses ┃
    assert len(body) > 1, out  # the long ids needed more than one line
    assert all(len(line) <= 80 for line in out.splitlines()), out
    cells = [_cells(line) for line in body]
    assert all(len(c) == 8 for c in cells), out
    assert "".join(c[0] for c in cells) == LONG_DEVICE
    assert "".join(c[2] for c in cells) == LONG_GATEWAY
    assert [c[3] for c in cells if c[3]] == ["197"]
