"""Haptic cues: CUE frames reach the tracker over a real pseudo-terminal, are
acknowledged, and are resent until they are."""

from __future__ import annotations

import json
import os
import pty
import select
import time
import tty
import uuid
from pathlib import Path

from replay_harness import PROVENANCE, GatewayProcess, Tracker

from firmware_shim import Cue, FrameType, HapticPattern, Hello, StreamDecoder, encode_frame, schema


def test_test_cue_reaches_the_emulated_tracker(tmp_path: Path, processes: list) -> None:
    """The field staff's test cue: a TAP arrives at the tracker and is acknowledged."""
    facts = PROVENANCE["tcxparser__test"]
    cue_log = tmp_path / "cues.jsonl"
    tracker = Tracker(facts.path, tmp_path / "tty", "--speed", "20", "--cue-log", str(cue_log), log_dir=tmp_path)
    processes.append(tracker)
    tracker.wait_ready()
    gateway = GatewayProcess(tmp_path / "state", [tracker.link], tmp_path).start()
    processes.append(gateway)
    gateway.wait_socket()
    deadline = time.monotonic() + 30
    while not gateway.call("status")["result"]["ports"][0]["device_id"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    answer = gateway.call("test_cue", device_id="tcxparser__test", voice=False)
    assert answer["ok"], answer
    cue_id = answer["result"]["cue_id"]
    while True:
        cues = {c["cue_id"]: c for c in gateway.call("status")["result"]["cues"]}
        if cues.get(cue_id, {}).get("state") == "acknowledged":
            break
        assert time.monotonic() < deadline, cues
        time.sleep(0.1)
    played = [json.loads(line) for line in cue_log.read_text().splitlines()]
    assert {"cue_id": cue_id, "pattern": "TAP"}.items() <= next(p for p in played if p["cue_id"] == cue_id).items()


def test_unacknowledged_cue_is_resent_then_acknowledged(tmp_path: Path, processes: list) -> None:
    """The test plays the tracker itself on a pseudo-terminal and ignores the first CUE."""
    master, slave = pty.openpty()
    tty.setraw(slave)
    link = tmp_path / "tty"
    os.symlink(os.ttyname(slave), link)
    gateway = GatewayProcess(tmp_path / "state", [link], tmp_path).start()
    processes.append(gateway)
    gateway.wait_socket()
    boot = uuid.uuid4()
    os.write(master, encode_frame(FrameType.HELLO, 0, Hello("wrist-7", boot, schema(2).fingerprint, "test/1").to_payload()))
    deadline = time.monotonic() + 20
    while gateway.call("status")["result"]["ports"][0]["device_id"] != "wrist-7":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cue_id = gateway.call("test_cue", device_id="wrist-7", voice=False)["result"]["cue_id"]

    decoder, cue_frames = StreamDecoder(), []
    while len(cue_frames) < 2:
        assert time.monotonic() < deadline, f"saw {len(cue_frames)} CUE frame(s)"
        if select.select([master], [], [], 0.2)[0]:
            cue_frames += [f for f in decoder.feed(os.read(master, 4096))
                           if getattr(f, "type", None) is FrameType.CUE]
    assert {f.seq for f in cue_frames} == {cue_id}  # the same cue, sent again
    assert Cue.from_payload(cue_frames[1].payload).pattern is HapticPattern.TAP
    assert gateway.call("status")["result"]["cues"][0]["state"] == "sent"

    os.write(master, encode_frame(FrameType.CUE_ACK, cue_id))
    while (cue := gateway.call("status")["result"]["cues"][0])["state"] != "acknowledged":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert cue["attempts"] >= 2
    os.close(master)
    os.close(slave)
