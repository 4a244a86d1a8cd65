"""Fixtures: real emulated trackers on pseudo-terminals and a real gateway daemon."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from textual.pilot import Pilot

from gateway.state_reader import read_status

sys.path.insert(0, str(Path(__file__).parent))

from gateway_harness import (  # noqa: E402
    FENIX,
    RUN_GPX,
    TEST_TCX,
    GatewayProcess,
    Tracker,
    start_tracker,
    wait_until,
    write_config,
)


@dataclass
class LiveGateway:
    """A running daemon with one finished tracker and one still replaying."""

    state_dir: Path
    gateway: GatewayProcess
    finished: Tracker
    """Replayed at full rate: all of it acknowledged, its port now gone."""
    streaming: Tracker
    """Replaying in real time: its port stays open for minutes."""


@pytest.fixture
def live_gateway(tmp_path: Path) -> Iterator[LiveGateway]:
    finished = start_tracker(FENIX, tmp_path / "ports")
    streaming = start_tracker(RUN_GPX, tmp_path / "ports", speed=1.0,
                              extra=("--cue-log", str(tmp_path / "ports" / "cues.jsonl")))
    state_dir = tmp_path / "state"
    gateway = GatewayProcess(state_dir, [finished.link, streaming.link], write_config(tmp_path / "gateway.toml"),
                             tmp_path / "gateway.log")
    try:
        gateway.start()
        try:
            wait_until(lambda: finished.process.poll() is not None, 60, "the full-rate replay to finish")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\ntracker log:\n{finished.log()}\ngateway log:\n"
                                 f"{(tmp_path / 'gateway.log').read_text()}") from None
        assert finished.process.returncode == 0, finished.log()
        # The streaming tracker is known once its first records are committed;
        # before that the UI can only name its port.
        wait_until(lambda: any(d["device_id"] == RUN_GPX.stem for d in read_status(state_dir)["devices"]),
                   60, "the streaming tracker's first records")
        yield LiveGateway(state_dir, gateway, finished, streaming)
    finally:
        gateway.stop()
        finished.stop()
        streaming.stop()


@pytest.fixture(scope="session")
def prepared_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dir two trackers were fully replayed into, with the daemon stopped.

    21 records of the Fenix run and 384 of the TCX test file, no gaps, no
    duplicates, no quarantine.
    """
    base = tmp_path_factory.mktemp("prepared")
    trackers = [start_tracker(FENIX, base / "ports"), start_tracker(TEST_TCX, base / "ports")]
    gateway = GatewayProcess(base / "state", [t.link for t in trackers], write_config(base / "gateway.toml"),
                             base / "gateway.log")
    try:
        gateway.start()
        for tracker in trackers:
            wait_until(lambda t=tracker: t.process.poll() is not None, 120, f"{tracker.device_id} to finish")
            assert tracker.process.returncode == 0, tracker.log()
    finally:
        gateway.stop()
        for tracker in trackers:
            tracker.stop()
    return base / "state"


async def wait_for(pilot: Pilot[object], predicate: Callable[[], object], what: str, timeout_s: float = 15.0) -> None:
    """Let the app run until ``predicate()`` is true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await pilot.pause(0.05)
