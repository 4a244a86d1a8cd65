"""``pulsegate gateway status`` with long tracker ids: whole rows when piped, folded on a terminal.

The outbox is a real gateway.sqlite written by the gateway's own Outbox; the
command runs as a real subprocess, piped or on a real pseudo-terminal.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import termios
import uuid
from pathlib import Path

import pytest
from replay_harness import PULSEGATE

from firmware_shim import encode_record, schema, split_soe
from gateway._outbox import AcceptedRecord, Outbox

#: 64 characters, the longest id the frame format allows, with markup-like brackets.
LONG_ID = "treadmill-[red]-row-7-" + "z" * 34 + "-end-007"
SHORT_ID = "bike-1"
assert len(LONG_ID) == 64


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """An outbox holding 5 records of a long-named tracker and 3 of a short one."""
    state = tmp_path / "state"
    outbox = Outbox(state)
    info = schema(2)
    batch = []
    for device, count in ((LONG_ID, 5), (SHORT_ID, 3)):
        boot = str(uuid.uuid4())
        for seq in range(1, count + 1):
            record = {"device_id": device, "boot_id": boot, "seq": seq, "timestamp_us": 1_735_000_000_000_000 + seq,
                      "heart_rate_bpm": 120, "cadence_rpm": None, "speed_m_s": 2.0, "distance_m": float(seq),
                      "latitude_deg": None, "longitude_deg": None, "altitude_m": None, "power_w": None,
                      "temperature_c": None, "steps": seq, "battery_pct": 70,
                      "host": {"uptime_s": seq, "cpu_load": 0.2, "free_memory_bytes": 1 << 20}}
            datum = split_soe(encode_record(record))[1]
            batch.append(AcceptedRecord("/dev/ttyUSB0", device, boot, seq, record["timestamp_us"],
                                        info.fingerprint, 2, datum))
    outbox.commit_batch(batch)
    outbox.close()
    return state


def _cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.strip()[1:-1].split("│")]


@pytest.mark.parametrize("columns", [None, "80"], ids=["COLUMNS-unset", "COLUMNS-80"])
def test_piped_status_prints_whole_ids(state_dir: Path, columns: str | None) -> None:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    if columns:
        env["COLUMNS"] = columns
    result = subprocess.run([*PULSEGATE, "gateway", "status", "--state-dir", str(state_dir)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = {_cells(line)[0]: _cells(line) for line in result.stdout.splitlines() if line.startswith("│")}
    assert set(rows) == {LONG_ID, SHORT_ID}, result.stdout
    assert rows[LONG_ID][2:7] == ["5", "5", "0", "0", "0"]  # received, buffered, dup, gaps, quar
    assert rows[SHORT_ID][2:7] == ["3", "3", "0", "0", "0"]


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def test_status_on_a_narrow_terminal_folds_the_long_id(state_dir: Path) -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 80, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen([*PULSEGATE, "gateway", "status", "--state-dir", str(state_dir)],
                            stdout=slave, stderr=subprocess.PIPE, env={**env, "TERM": "xterm-256color"})
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO once the command has exited
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(60) == 0
    out = _ANSI.sub("", b"".join(chunks).decode()).replace("\r\n", "\n")
    assert all(len(line) <= 80 for line in out.splitlines()), out
    body = [_cells(line) for line in out.splitlines() if line.startswith("│")]
    assert len(body) > 2, out  # the long id folded onto more lines, not cropped with an ellipsis
    assert "".join(cells[0] for cells in body) in (LONG_ID + SHORT_ID, SHORT_ID + LONG_ID)
    assert "…" not in out
