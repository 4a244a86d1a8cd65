"""Battery low (hysteresis 15 % / 20 %) and ledger gaps (grace, P2/P3, resolved when filled)."""

from __future__ import annotations

from central.detectors import Detectors
from central.incidents import State
from central.store import TelemetryStore

from .conftest import FakeClock, incidents_of
from .streams import US, Tracker, every_second


def test_battery_fires_below_15_and_clears_only_above_20(
    store: TelemetryStore, detectors: Detectors, clock: FakeClock
) -> None:
    detectors.settings.detectors.enabled = ["battery_low"]
    tracker = Tracker(store, "TR-BAT")
    t = clock.now_us - 1000 * US
    tracker.send(every_second(t, 60, battery_pct=16))
    tracker.send(every_second(t + 60 * US, 60, battery_pct=14))  # spans 59 s: not yet
    assert detectors.run_pass() == []
    tracker.send([(t + 120 * US, {"battery_pct": 14})])  # now 60 s below 15
    assert [(a.verb, a.subject, a.priority) for a in detectors.run_pass()] == [
        ("raised", "device:TR-BAT", "P4")
    ]

    tracker.send(every_second(t + 121 * US, 300, battery_pct=18))  # between 15 and 20: not clear
    assert detectors.run_pass() == []
    tracker.send(every_second(t + 421 * US, 61, battery_pct=21))  # above 20 for 60 s
    assert [a.verb for a in detectors.run_pass()] == ["resolved"]
    (incident,) = incidents_of(detectors, "battery_low")
    assert incident.state is State.RESOLVED and incident.details["worst"] == 14


def write_seqs(store: TelemetryStore, tracker: Tracker, seqs: list[int], start_us: int) -> None:
    rows = tracker.rows(
        [(start_us + n * US, {}) for n in range(1, max(seqs) + 1)], received_us=start_us
    )
    store.write([row for row in rows if row.seq in seqs])


def test_a_gap_is_loss_after_the_grace_and_resolves_when_filled(
    store: TelemetryStore, detectors: Detectors, clock: FakeClock
) -> None:
    detectors.settings.detectors.enabled = ["ledger_gap"]
    small, big = Tracker(store, "TR-GAP"), Tracker(store, "TR-LOSS")
    t = clock.now_us - 3600 * US
    write_seqs(store, small, [*range(1, 11), *range(21, 31)], t)
    write_seqs(store, big, [*range(1, 6), *range(156, 161)], t)
    assert detectors.run_pass() == []  # within the 300 s grace: maybe still on its way

    clock.advance(301)
    actions = {a.subject: a for a in detectors.run_pass()}
    assert (
        actions["device:TR-GAP"].priority == "P3"
        and "lost 10 records: seq 11-20" in actions["device:TR-GAP"].summary
    )
    assert (
        actions["device:TR-LOSS"].priority == "P2"
        and "lost 150 records: seq 6-155" in actions["device:TR-LOSS"].summary
    )
    (incident,) = incidents_of(detectors, "ledger_gap", "device:TR-GAP")
    assert incident.details["missing_ranges"] == {small.boot_id: [[11, 20]]}
    assert detectors.run_pass() == []  # unchanged loss: no repeat

    small.seq = 0
    write_seqs(store, small, list(range(11, 21)), t)  # the backlog arrives after all
    actions = detectors.run_pass()
    assert [(a.verb, a.subject) for a in actions] == [("resolved", "device:TR-GAP")]
    assert incidents_of(detectors, "ledger_gap", "device:TR-LOSS")[0].state is State.NEW
