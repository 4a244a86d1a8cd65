"""``pulsegate shim replay`` shows its progress on a terminal and always ends with a summary.

A real tracker emulator replays a real recording over a pseudo-terminal into a
real gateway daemon; the emulator's stderr is itself a pseudo-terminal (what a
person sees) or a pipe (what a script sees).
"""

from __future__ import annotations

import os
import pty
import re
import subprocess
import threading
import time
from pathlib import Path

from replay_harness import PROVENANCE, PULSEGATE, GatewayProcess

#: 1072 samples over 17 min 52 s: at 200x about five seconds, long enough to see it move
#: even after the gateway took a second or two to start.
FACTS = PROVENANCE["fitparse-rs__hrv-activity"]
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def _replay(tmp_path: Path, processes: list, stderr: int) -> subprocess.Popen[bytes]:
    link = tmp_path / "tracker.pty"
    tracker = subprocess.Popen(
        [*PULSEGATE, "shim", "replay", str(FACTS.path), "--create-pty", str(link), "--speed", "200",
         "--timeout", "120"],
        stdout=subprocess.PIPE, stderr=stderr,
    )
    processes.append(tracker)
    deadline = time.monotonic() + 60
    while not link.exists():
        assert tracker.poll() is None and time.monotonic() < deadline, "the tracker did not create its link"
        time.sleep(0.05)
    processes.append(GatewayProcess(tmp_path / "state", [link], tmp_path).start())
    return tracker


def _summary_re(total: int) -> re.Pattern[str]:
    return re.compile(
        rf"^fitparse-rs__hrv-activity: {total}/{total} records acknowledged in \d+\.\d s, "
        r"[\d,]+ records/s \(\d+ resent, 0 corrupted, 1 boot\(s\), \d+ cue\(s\)\)$"
    )


def test_progress_on_a_terminal_then_the_summary(tmp_path: Path, processes: list) -> None:
    master, slave = pty.openpty()
    tracker = _replay(tmp_path, processes, stderr=slave)
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:  # keep reading, or a full terminal buffer would stall the tracker
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain)
    reader.start()
    assert tracker.wait(120) == 0
    reader.join(10)
    os.close(master)
    assert tracker.stdout is not None and tracker.stdout.read() == b""  # stdout stays clean
    seen = _ANSI.sub("", b"".join(chunks).decode(errors="replace"))
    total = FACTS.samples
    counts = {int(n) for n in re.findall(rf"(\d+)/{total} acknowledged", seen)}
    assert "fitparse-rs__hrv-activity: sending" in seen and "records/s" in seen, seen
    assert total in counts and any(0 < n < total for n in counts), counts  # it moved
    lines = [line.strip() for line in seen.replace("\r", "\n").splitlines() if line.strip()]
    assert _summary_re(total).match(lines[-1]), lines[-1]


def test_piped_stderr_has_no_progress_only_the_summary(tmp_path: Path, processes: list) -> None:
    tracker = _replay(tmp_path, processes, stderr=subprocess.PIPE)
    out, err = tracker.communicate(timeout=120)
    assert tracker.returncode == 0
    assert out == b""
    lines = err.decode().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"fitparse-rs__hrv-activity: replaying {FACTS.samples} records from ")
    assert _summary_re(FACTS.samples).match(lines[1]), lines[1]
