"""Real processes and corpus facts for tests: emulated trackers on
pseudo-terminals, gateway daemons, and what PROVENANCE.md says of each recording."""


from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
RECORDINGS = FIXTURES / "recordings"
PULSEGATE = [sys.executable, "-m", "pulsegate"]


@dataclass(frozen=True)
class ProvenanceFacts:
    """What PROVENANCE.md says of one recording: counted by another tool than ours."""

    path: Path
    samples: int
    first_time: str
    last_time: str


def _provenance() -> dict[str, ProvenanceFacts]:
    facts = {}
    row = re.compile(r"^\| `(?P<rel>(fit|gpx|tcx)/[^`]+)` \| (?P<n>\d+) (record msgs|trackpoints) \| \w+ \| (?P<first>\S+) -> (?P<last>\S+) ")
    for line in (FIXTURES / "PROVENANCE.md").read_text().splitlines():
        m = row.match(line)
        if m:
            path = RECORDINGS / m["rel"]
            facts[path.stem] = ProvenanceFacts(path, int(m["n"]), m["first"], m["last"])
    return facts


PROVENANCE = _provenance()



def run_cli(*args: str, timeout: float = 120, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``pulsegate ARGS`` as a real subprocess and capture its output."""
    return subprocess.run([*PULSEGATE, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=cwd)


class Tracker:
    """An emulated tracker process replaying a recording onto a pseudo-terminal."""

    def __init__(self, recording: Path, link: Path, *extra: str, log_dir: Path) -> None:
        self.recording, self.link = recording, link
        self.log_path = log_dir / f"tracker-{link.name}.log"
        self.process = subprocess.Popen(
            [*PULSEGATE, "shim", "replay", str(recording), "--create-pty", str(link), "--timeout", "240", *extra],
            stdout=subprocess.DEVNULL, stderr=self.log_path.open("w"),
        )

    def wait_ready(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while not self.link.exists():
            assert self.process.poll() is None, f"tracker exited early: {self.log_path.read_text()}"
            assert time.monotonic() < deadline, "tracker did not create its pseudo-terminal"
            time.sleep(0.05)

    def wait(self, timeout: float = 240) -> int:
        return self.process.wait(timeout)

    @property
    def log(self) -> str:
        return self.log_path.read_text()


class GatewayProcess:
    """A real ``pulsegate gateway run`` daemon in a subprocess."""

    def __init__(self, state_dir: Path, ports: list[Path], log_dir: Path, *extra: str, config: Path | None = None) -> None:
        self.state_dir, self.ports, self.log_dir, self.extra = state_dir, ports, log_dir, extra
        self.config = config or log_dir / "gateway.toml"
        if not self.config.exists():
            self.config.write_text('[metrics]\nlisten_address = ""\n[airpods]\nenabled = false\n')
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> GatewayProcess:
        self.starts += 1
        args = [*PULSEGATE, "gateway", "run", "--state-dir", str(self.state_dir), "--config", str(self.config),
                *[a for p in self.ports for a in ("--port", str(p))], *self.extra]
        log = (self.log_dir / f"gateway-{self.starts}.log").open("w")
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)
        return self

    def wait_socket(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.log
            try:
                self.call("ping")
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("gateway control socket did not come up")

    def call(self, op: str, **args: object) -> dict:
        """One control-API request; returns the final response."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(30)
            sock.connect(str(self.state_dir / "control.sock"))
            stream = sock.makefile("rwb")
            stream.write(json.dumps({"id": 1, "op": op, "args": args}).encode() + b"\n")
            stream.flush()
            while True:
                message = json.loads(stream.readline())
                if "progress" not in message:
                    return message

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill(signal.SIGTERM)

    @property
    def log(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.log_dir.glob("gateway-*.log")))

