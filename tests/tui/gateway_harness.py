"""Real trackers and a real gateway daemon, as subprocesses, for the UI tests.

Each tracker is ``pulsegate shim replay`` publishing a pseudo-terminal; the
gateway is ``pulsegate gateway run`` reading those terminals into a state dir.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

RECORDINGS = Path(__file__).resolve().parents[1] / "fixtures" / "recordings"
#: Small recordings: 21, 206 and 384 records.
FENIX = RECORDINGS / "fit" / "fitparse__garmin-fenix-5-run.fit"
RUN_GPX = RECORDINGS / "gpx" / "togeojson__run.gpx"
TEST_TCX = RECORDINGS / "tcx" / "tcxparser__test.tcx"

GATEWAY_ID = "tui-test-gw"
SITE = "test-gym"
#: Generous for a loaded CI machine; the happy path takes about a second.
START_TIMEOUT_S = 30.0


def wait_until(predicate: object, timeout_s: float, what: str) -> None:
    """Poll ``predicate`` (a callable) until true, or fail saying ``what`` did not happen."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@dataclass
class Tracker:
    """An emulated tracker replaying a recording on a pseudo-terminal."""

    recording: Path
    link: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def device_id(self) -> str:
        return self.recording.stem

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_tracker(recording: Path, ports_dir: Path, *, speed: float | None = None, extra: tuple[str, ...] = (),
                  timeout_s: float = 300.0) -> Tracker:
    """Start ``pulsegate shim replay`` and wait for its pseudo-terminal to appear."""
    ports_dir.mkdir(parents=True, exist_ok=True)
    link = ports_dir / recording.stem
    log_path = ports_dir / f"{recording.stem}.log"
    rate = ["--speed", str(speed)] if speed else ["--max-rate"]
    process = subprocess.Popen(
        [sys.executable, "-m", "pulsegate", "shim", "replay", str(recording), "--create-pty", str(link),
         *rate, "--timeout", str(timeout_s), *extra],
        stdout=subprocess.DEVNULL, stderr=log_path.open("w"),
    )
    tracker = Tracker(recording, link, log_path, process)
    wait_until(lambda: link.exists() or process.poll() is not None, START_TIMEOUT_S, f"{link} to appear")
    if process.poll() is not None:
        raise AssertionError(f"tracker {recording.name} exited early: {tracker.log()}")
    return tracker


def write_config(path: Path) -> Path:
    """A gateway config: fixed id and site, no metrics port (tests run in parallel)."""
    path.write_text(
        f'[gateway]\nid = "{GATEWAY_ID}"\nsite = "{SITE}"\n\n[metrics]\nlisten_address = ""\n'
    )
    return path


def control_request(state_dir: Path, op: str, args: dict[str, object] | None = None,
                    timeout_s: float = 5.0) -> dict[str, object]:
    """One blocking request on the control socket, for the tests' own checks."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect(str(state_dir / "control.sock"))
        sock.sendall(json.dumps({"id": 1, "op": op, "args": args or {}}).encode() + b"\n")
        with sock.makefile("rb") as stream:
            while True:
                message = json.loads(stream.readline())
                if "progress" not in message:
                    return message


@dataclass
class GatewayProcess:
    """``pulsegate gateway run`` on a state dir, reading the given ports."""

    state_dir: Path
    ports: list[Path]
    config: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = field(default=0)

    def start(self) -> None:
        """Start the daemon and wait until its control socket answers ``ping``."""
        args = [sys.executable, "-m", "pulsegate", "-v", "gateway", "run", "--state-dir", str(self.state_dir),
                "--config", str(self.config)]
        for port in self.ports:
            args += ["--port", str(port)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log_path.open("a"),
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.starts += 1
        wait_until(self._answers, START_TIMEOUT_S, f"the gateway daemon's control socket (log: {self.log_path})")

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"gateway exited with {self.process.returncode}: {self.log_path.read_text()}")
        try:
            return bool(control_request(self.state_dir, "ping", timeout_s=1.0).get("ok"))
        except OSError:
            return False

    def kill(self) -> None:
        """Kill it hard (SIGKILL): the socket file stays behind, as after a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        """Stop it cleanly (SIGTERM)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
