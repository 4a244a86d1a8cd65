"""`pulsegate demo`, the quick start's first command, run as `make demo` runs it: a relative state dir."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

from replay_harness import PROVENANCE, PULSEGATE

#: Three short recordings of the three formats keep the run under a minute.
RECORDINGS = ["tcxparser__test", "togeojson__run", "fitparse__garmin-fenix-5-run"]


def test_demo_with_a_relative_state_dir_ends_with_a_whole_ledger(tmp_path: Path) -> None:
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    for name in RECORDINGS:
        shutil.copy(PROVENANCE[name].path, recordings)
    result = subprocess.run(
        [*PULSEGATE, "demo", "--state-dir", ".state/demo", "--recordings", "recordings"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    total = sum(PROVENANCE[name].samples for name in RECORDINGS)
    assert f"central holds all {total} records with no gap" in result.stdout
    # Piped, no progress bar is drawn into either stream (they are for terminals only).
    for bar in ("trackers reading their recordings", "records durably buffered", "exporting ━"):
        assert bar not in result.stdout + result.stderr, bar
    # Piped, nothing is cropped: rich marks a cropped cell with an ellipsis.
    assert "…" not in result.stdout, [line for line in result.stdout.splitlines() if "…" in line]
    # Everything stayed under the state dir given, nowhere else.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".state", "recordings"]
    store = tmp_path / ".state/demo/central/telemetry.sqlite3"
    with sqlite3.connect(store) as conn:
        held = dict(conn.execute("SELECT device_id, count(*) FROM telemetry GROUP BY device_id").fetchall())
    assert held == {name: PROVENANCE[name].samples for name in RECORDINGS}
