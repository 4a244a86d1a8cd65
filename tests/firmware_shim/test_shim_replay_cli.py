"""``pulsegate shim replay`` refuses bad recordings with one line, as a real subprocess."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest


def run_replay(recording: Path, link: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pulsegate",
            "shim",
            "replay",
            str(recording),
            "--create-pty",
            str(link),
            "--timeout",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def _write(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(tmp_path: Path) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    return make


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "nowhere.fit"


def _io_error(tmp_path: Path) -> Path:
    # Reading /proc/self/mem at offset 0 fails with EIO, even for root: a real
    # file that cannot be read, without needing another user.
    path = tmp_path / "unreadable.fit"
    path.symlink_to("/proc/self/mem")
    return path


CASES = {
    "missing": (_missing, "nowhere.fit: no such file"),
    "unknown-type": (_write("workout.csv", b"time,hr\n1,120\n"), "unknown recording type '.csv'"),
    "no-suffix": (_write("workout", b"x"), "unknown recording type ''"),
    "garbage-fit": (_write("garbage.fit", bytes(range(256)) * 4), "cannot parse FIT"),
    "empty-fit": (_write("empty.fit", b""), "no samples in the recording"),
    "garbage-gpx": (_write("garbage.gpx", b"\xff\xfe not xml"), "cannot parse GPX"),
    "garbage-tcx": (
        _write("garbage.tcx", b"<TrainingCenterDatabase><Activities>"),
        "cannot parse TCX",
    ),
    "gpx-without-points": (
        _write("empty.gpx", b'<?xml version="1.0"?><gpx version="1.1" creator="t"></gpx>'),
        "no samples in the recording",
    ),
    "io-error": (_io_error, "Input/output error"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_recording_exits_non_zero_with_one_line(case: str, tmp_path: Path) -> None:
    make, message = CASES[case]
    recording = make(tmp_path)
    link = tmp_path / "tracker.pty"
    result = run_replay(recording, link, tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pulsegate: error: ") and message in lines[0], lines[0]
    assert str(recording) in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not link.exists() and not link.is_symlink(), (
        "a refused replay left its pseudo-terminal link behind"
    )


def test_directory_as_recording_is_one_line(tmp_path: Path) -> None:
    recording = tmp_path / "folder.fit"
    recording.mkdir()
    result = run_replay(recording, tmp_path / "tracker.pty", tmp_path)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
