"""The cue policy: priorities, de-duplication, rate limit, quiet hours, the in-ear gate, caps.

Voice parts go through the real espeak-ng and a real player script; haptic
parts go to a sink that records what the gateway would have sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import time as clock_time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from firmware_shim import HapticPattern
from gateway.airpods import (
    AirPodsLink,
    AirPodsSettings,
    Cue,
    CueDispatcher,
    CueError,
    CueOutcome,
    CuePriority,
    CueSettings,
    LinkState,
    VoiceOutput,
    VoiceSettings,
    airpods_status,
)

from ._replay import FakeRadio, background, replay_backend, stream
from .conftest import Player

WAIT_S = 20.0


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


class Ears:
    """The in-ear gate as the link would answer it."""

    def __init__(self, in_ear: bool = True) -> None:
        self.in_ear = in_ear

    def __call__(self) -> bool:
        return self.in_ear


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def haptics() -> list[tuple[str, HapticPattern, str]]:
    return []


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def make_dispatcher(
    voice_settings: VoiceSettings, clock: Clock, haptics: list, registry: CollectorRegistry
) -> Iterator[object]:
    made: list[CueDispatcher] = []

    def make(
        ears: Ears | None = None,
        local: clock_time = clock_time(12, 0),
        voice: bool = True,
        **overrides: object,
    ) -> CueDispatcher:
        dispatcher = CueDispatcher(
            CueSettings(**overrides),  # type: ignore[arg-type]
            VoiceOutput(voice_settings) if voice else None,
            haptic_sink=lambda device, pattern, key: haptics.append((device, pattern, key)),
            voice_gate=ears or Ears(),
            clock=clock,
            local_time=lambda: local,
            registry=registry
            if not made
            else CollectorRegistry(),  # metrics of the first one are checked
        )
        made.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in made:
        dispatcher.stop()


def milestone(key: str, text: str = "One kilometre", device: str | None = "tracker-1") -> Cue:
    return Cue(key, CuePriority.MILESTONE, text, HapticPattern.DOUBLE_TAP, device)


def counted(registry: CollectorRegistry, channel: str, outcome: str) -> float:
    return (
        registry.get_sample_value(
            "pulsegate_gateway_cues_total", {"channel": channel, "outcome": outcome}
        )
        or 0.0
    )


def test_voice_and_haptic_both_go_out(make_dispatcher, player: Player, haptics, registry) -> None:
    cues = make_dispatcher()
    cues.start()
    assert cues.submit(milestone("t1:distance:1")) == CueOutcome(voice="queued", haptic="sent")
    assert cues.wait_idle(WAIT_S)
    assert haptics == [("tracker-1", HapticPattern.DOUBLE_TAP, "t1:distance:1")]
    (played,) = player.played()
    assert "t1_distance_1" in played.name
    assert cues.status()["voice"] == {"sent": 1, "dropped": {}}
    assert counted(registry, "voice", "sent") == 1 and counted(registry, "haptic", "sent") == 1


def test_queue_speaks_by_priority(make_dispatcher, player: Player) -> None:
    """Cues queued before the speaking thread starts come out alarm, health, milestone, info."""
    cues = make_dispatcher(max_voice_per_minute=10)
    for key, priority in (
        ("info", CuePriority.INFO),
        ("mile", CuePriority.MILESTONE),
        ("alarm", CuePriority.ALARM),
        ("health", CuePriority.HEALTH),
    ):
        assert cues.submit(Cue(key, priority, "Cue")).voice == "queued"
    cues.start()
    assert cues.wait_idle(WAIT_S)
    assert [p.name.split("-", 1)[1] for p in player.played()] == [
        "alarm.wav",
        "health.wav",
        "mile.wav",
        "info.wav",
    ]


def test_duplicate_key_within_window_is_dropped(make_dispatcher, clock: Clock, haptics) -> None:
    cues = make_dispatcher(dedupe_window_s=120.0)
    assert cues.submit(milestone("k")).haptic == "sent"
    clock.now_s += 119.0
    assert cues.submit(milestone("k")) == CueOutcome(voice="duplicate", haptic="duplicate")
    clock.now_s += 2.0
    assert cues.submit(milestone("k")).haptic == "sent"
    assert len(haptics) == 2
    assert cues.status()["haptic"] == {"sent": 2, "dropped": {"duplicate": 1}}


def test_rate_limit_caps_voice_per_minute_and_alarms_have_their_own_cap(
    make_dispatcher, clock: Clock, haptics
) -> None:
    cues = make_dispatcher(max_voice_per_minute=2, max_alarm_voice_per_minute=1)
    assert [cues.submit(milestone(f"m{i}")).voice for i in range(3)] == [
        "queued",
        "queued",
        "rate_limited",
    ]
    assert len(haptics) == 3  # the rate limit is on speech only
    alarm = Cue("a1", CuePriority.ALARM, "Stop and check")
    assert cues.submit(alarm).voice == "queued"
    assert cues.submit(Cue("a2", CuePriority.ALARM, "Stop and check")).voice == "rate_limited"
    clock.now_s += 60.0
    assert cues.submit(milestone("m9")).voice == "queued"


def test_quiet_hours_silence_everything_but_alarms(make_dispatcher, haptics) -> None:
    night = make_dispatcher(
        quiet_hours_start="22:00", quiet_hours_end="06:30", local=clock_time(23, 15)
    )
    assert night.submit(milestone("m1")) == CueOutcome(voice="quiet_hours", haptic="quiet_hours")
    alarm = Cue("a1", CuePriority.ALARM, "Stop", HapticPattern.ALARM, "tracker-1")
    assert night.submit(alarm) == CueOutcome(voice="queued", haptic="sent")
    early = make_dispatcher(
        quiet_hours_start="22:00", quiet_hours_end="06:30", local=clock_time(6, 29)
    )
    assert early.submit(milestone("m2")).voice == "quiet_hours"
    morning = make_dispatcher(
        quiet_hours_start="22:00", quiet_hours_end="06:30", local=clock_time(6, 30)
    )
    assert morning.submit(milestone("m3")).voice == "queued"
    lunch = make_dispatcher(
        quiet_hours_start="12:00", quiet_hours_end="13:00", local=clock_time(12, 30)
    )
    assert lunch.submit(milestone("m4")).voice == "quiet_hours"
    assert haptics == [
        ("tracker-1", HapticPattern.ALARM, "a1"),
        ("tracker-1", HapticPattern.DOUBLE_TAP, "m3"),
    ]


def test_out_of_ear_drops_voice_but_haptic_still_goes(make_dispatcher, haptics, registry) -> None:
    cues = make_dispatcher(ears=Ears(in_ear=False))
    assert cues.submit(milestone("m1")) == CueOutcome(voice="not_in_ear", haptic="sent")
    assert haptics and counted(registry, "voice", "not_in_ear") == 1


def test_pods_removed_while_queued_drops_at_speaking_time(make_dispatcher, player: Player) -> None:
    ears = Ears(in_ear=True)
    cues = make_dispatcher(ears=ears)
    assert cues.submit(milestone("m1")).voice == "queued"
    ears.in_ear = False
    cues.start()
    assert cues.wait_idle(WAIT_S)
    assert player.played() == [] and cues.status()["voice"]["dropped"] == {"not_in_ear": 1}


def test_cue_waiting_too_long_is_stale(make_dispatcher, clock: Clock, player: Player) -> None:
    cues = make_dispatcher(max_age_s=30.0)
    cues.submit(milestone("m1"))
    clock.now_s += 31.0
    cues.start()
    assert cues.wait_idle(WAIT_S)
    assert player.played() == [] and cues.status()["voice"]["dropped"] == {"stale": 1}


def test_queue_cap_drops_new_low_priority_and_evicts_for_alarms(make_dispatcher, registry) -> None:
    cues = make_dispatcher(max_voice_per_minute=100)
    assert all(
        cues.submit(Cue(f"i{n}", CuePriority.INFO, "x")).voice == "queued" for n in range(16)
    )
    assert cues.submit(Cue("i16", CuePriority.INFO, "x")).voice == "queue_full"
    assert (
        cues.submit(Cue("a", CuePriority.ALARM, "x")).voice == "queued"
    )  # evicts the newest info cue
    assert cues.status()["queued"] == 16
    assert counted(registry, "voice", "queue_full") == 2
    assert registry.get_sample_value("pulsegate_gateway_cue_queue_length") == 16


def test_haptic_needs_a_target_and_sink_errors_do_not_lose_voice(voice_settings, clock) -> None:
    def broken_sink(device: str, pattern: HapticPattern, key: str) -> None:
        raise OSError("serial port closed")

    cues = CueDispatcher(
        CueSettings(),
        VoiceOutput(voice_settings),
        haptic_sink=broken_sink,
        voice_gate=Ears(),
        clock=clock,
        registry=CollectorRegistry(),
    )
    assert cues.submit(milestone("m1")) == CueOutcome(voice="queued", haptic="sink_error")
    assert cues.submit(milestone("m2", device=None)).haptic == "no_target"
    no_sink = CueDispatcher(
        CueSettings(),
        None,
        haptic_sink=None,
        voice_gate=Ears(),
        clock=clock,
        registry=CollectorRegistry(),
    )
    assert no_sink.submit(milestone("m3")) == CueOutcome(
        voice="no_audio_sink", haptic="no_haptic_sink"
    )


def test_voice_unavailable_counts_no_audio_sink(
    make_dispatcher, voice_settings, clock, haptics, tmp_path
) -> None:
    silent = VoiceOutput(VoiceSettings(player_command=[str(tmp_path / "no-such-player")]))
    cues = CueDispatcher(
        CueSettings(),
        silent,
        haptic_sink=lambda *a: haptics.append(a),
        voice_gate=Ears(),
        clock=clock,
        registry=CollectorRegistry(),
    )
    assert cues.submit(milestone("m1")) == CueOutcome(voice="no_audio_sink", haptic="sent")
    assert cues.status()["voice"]["dropped"] == {"no_audio_sink": 1}


def test_stop_drops_queued_voice_as_shutdown(make_dispatcher) -> None:
    cues = make_dispatcher(max_voice_per_minute=10)
    for n in range(3):
        cues.submit(milestone(f"m{n}"))
    cues.stop()
    assert cues.status()["voice"]["dropped"] == {"shutdown": 3}


def test_malformed_cue_is_refused() -> None:
    with pytest.raises(CueError, match="neither voice text nor a haptic pattern"):
        Cue("k", CuePriority.INFO)
    with pytest.raises(CueError, match="non-empty key"):
        Cue("", CuePriority.INFO, "text")


def test_link_gates_voice_end_to_end(
    voice_settings, player: Player, haptics, tmp_path: Path
) -> None:
    """Replayed adverts drive the link; its voice_allowed gates the dispatcher's speech."""
    radio = FakeRadio()
    radio.script = sorted(
        stream("ap12", "AA:AA:AA:AA:AA:01", -50, start_s=0.0, stop_s=30.0, every_s=0.05)
        + background(stop_s=30.0),
        key=lambda a: a.at_s,
    )
    link = AirPodsLink(
        AirPodsSettings(poll_interval_s=0.02),
        backend=replay_backend(radio),
        registry=CollectorRegistry(),
    )
    cues = CueDispatcher(
        CueSettings(),
        VoiceOutput(voice_settings),
        haptic_sink=lambda *a: haptics.append(a),
        voice_gate=link.voice_allowed,
        registry=CollectorRegistry(),
    )
    link.start()
    cues.start()
    try:
        assert link.wait_for_state([LinkState.NEAR], WAIT_S)  # ap12: both pods out, lid open
        assert cues.submit(milestone("m1")) == CueOutcome(voice="not_in_ear", haptic="sent")
        radio.script = stream(
            "ap13", "AA:AA:AA:AA:AA:01", -50, start_s=0.0, stop_s=30.0, every_s=0.05
        )
        link.rescan()  # the new scanner replays the in-ear capture
        assert link.wait_for_state([LinkState.IN_EAR], WAIT_S)
        assert cues.submit(milestone("m2")).voice == "queued"
        assert cues.wait_idle(WAIT_S)
        assert len(player.played()) == 1
        status = airpods_status(link, cues)
        assert status["state"] == "in_ear"
        assert status["cues"]["voice"] == {"sent": 1, "dropped": {"not_in_ear": 1}}
        assert status["cues"]["haptic"] == {"sent": 2, "dropped": {}}
    finally:
        cues.stop()
        link.stop()
