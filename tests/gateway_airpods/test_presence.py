"""Choosing our pair among advertising devices, and presence hysteresis, on a hand-driven clock."""

from __future__ import annotations

from gateway.airpods import AirPodsSettings, Presence, PresenceTracker, parse_proximity_pairing

from ._replay import advert_bytes

IN_EAR = parse_proximity_pairing(advert_bytes("ap13"))  # AirPods 3, both in ear
OUT = parse_proximity_pairing(advert_bytes("ap12"))  # AirPods 3, both out, lid open
PRO = parse_proximity_pairing(advert_bytes("ap02"))  # AirPods Pro, a neighbour's
OURS, THEIRS = "AA:AA:AA:AA:AA:01", "BB:BB:BB:BB:BB:02"


def tracker(**overrides: object) -> PresenceTracker:
    return PresenceTracker(AirPodsSettings(**overrides))  # type: ignore[arg-type]


def test_first_sighting_sets_presence_at_once() -> None:
    t = tracker()
    assert t.observe(OURS, -50, IN_EAR, 0.0) == "accepted"
    assert t.presence is Presence.IN_EAR


def test_advert_below_rssi_floor_is_weak_and_ignored() -> None:
    t = tracker(rssi_floor_dbm=-60)
    assert t.observe(OURS, -61, IN_EAR, 0.0) == "weak"
    assert t.presence is Presence.UNSEEN and t.last is None


def test_rssi_floor_relaxes_by_hysteresis_once_present() -> None:
    """-63 dBm is refused for a newcomer but kept for the pair already present (floor -60, hysteresis 5)."""
    t = tracker(rssi_floor_dbm=-60, rssi_hysteresis_db=5)
    assert t.observe(OURS, -63, IN_EAR, 0.0) == "weak"
    assert t.observe(OURS, -55, IN_EAR, 0.1) == "accepted"
    assert t.observe(OURS, -63, IN_EAR, 0.2) == "accepted"
    assert t.observe(OURS, -66, IN_EAR, 0.3) == "weak"


def test_strongest_beacon_in_window_wins() -> None:
    """A weaker neighbour inside the window is 'other_beacon'; once ours is older than the window it takes over."""
    t = tracker(strongest_window_s=10.0, rssi_hysteresis_db=5)
    assert t.observe(OURS, -45, IN_EAR, 0.0) == "accepted"
    assert t.observe(THEIRS, -58, PRO, 1.0) == "other_beacon"
    assert t.last is not None and t.last.address == OURS
    # ours silent for longer than the window: the neighbour is now the strongest beacon
    assert t.observe(THEIRS, -58, PRO, 10.5) == "accepted"
    assert t.last is not None and t.last.address == THEIRS


def test_choice_sticks_unless_another_is_clearly_stronger() -> None:
    t = tracker(rssi_hysteresis_db=5)
    t.observe(OURS, -50, IN_EAR, 0.0)
    assert t.observe(THEIRS, -47, PRO, 0.1) == "other_beacon"  # 3 dB stronger: not enough
    assert t.observe(THEIRS, -40, PRO, 0.2) == "accepted"  # 10 dB stronger: switch


def test_allow_lists_filter_address_and_model() -> None:
    t = tracker(addresses=[OURS.lower()], models=["0x1320"])
    assert t.observe(THEIRS, -40, IN_EAR, 0.0) == "filtered_address"
    assert t.observe(OURS, -40, PRO, 0.1) == "filtered_model"
    assert t.observe(OURS, -40, IN_EAR, 0.2) == "accepted"


def test_one_out_of_ear_advert_does_not_flap_presence() -> None:
    """With confirm_adverts=2, a single disagreeing advert changes nothing; two in a row do."""
    t = tracker(confirm_adverts=2)
    t.observe(OURS, -50, IN_EAR, 0.0)
    t.observe(OURS, -50, OUT, 0.1)
    assert t.presence is Presence.IN_EAR
    t.observe(OURS, -50, IN_EAR, 0.2)
    t.observe(OURS, -50, OUT, 0.3)
    assert t.presence is Presence.IN_EAR
    t.observe(OURS, -50, OUT, 0.4)
    assert t.presence is Presence.NEAR


def test_away_only_after_the_silence_timeout() -> None:
    t = tracker(away_after_s=30.0)
    t.observe(OURS, -50, OUT, 100.0)
    assert t.tick(129.9) is Presence.NEAR
    assert t.tick(130.1) is Presence.AWAY
    t.observe(OURS, -50, IN_EAR, 131.0)  # back: believed at once
    assert t.presence is Presence.IN_EAR


def test_candidate_memory_is_capped() -> None:
    """Hundreds of passing devices do not grow the tracker without bound."""
    t = tracker(strongest_window_s=1000.0)
    for n in range(500):
        t.observe(f"CC:CC:CC:CC:{n // 256:02X}:{n % 256:02X}", -59, PRO, float(n))
    assert len(t._candidates) == 64
