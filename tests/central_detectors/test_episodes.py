"""The hysteresis core: when a run fires, when an episode ends, what breaks a run."""

from __future__ import annotations

from central.detectors import Verdict, scan_episodes

B, G, N = Verdict.BAD, Verdict.GOOD, Verdict.NEUTRAL
S = 1_000_000


def scan(
    verdicts: list[Verdict], step_s: int = 1, fire_s: int = 30, clear_s: int = 30, gap_s: int = 120
):
    samples = [(i * step_s * S, v, float(i)) for i, v in enumerate(verdicts)]
    return scan_episodes(
        samples, fire_after_us=fire_s * S, clear_after_us=clear_s * S, max_gap_us=gap_s * S
    )


def test_a_run_fires_once_it_spans_fire_after() -> None:
    """30 BAD samples one second apart span 29 s: no episode; 31 span 30 s: one."""
    assert scan([G] * 5 + [B] * 30 + [G] * 40).episodes == []
    found = scan([G] * 5 + [B] * 31 + [G] * 40).episodes
    assert [(e.start_us, e.fired_us, e.end_us) for e in found] == [(5 * S, 35 * S, 36 * S)]


def test_a_short_good_dip_does_not_end_an_episode() -> None:
    """GOOD for 29 s inside an episode keeps it going; 30 s ends it at the dip's start."""
    result = scan([B] * 31 + [G] * 30 + [B] * 5)
    assert len(result.episodes) == 1 and result.ongoing is not None and not result.cleared
    result = scan([B] * 31 + [G] * 31)
    assert result.episodes[0].end_us == 31 * S and result.ongoing is None and result.cleared


def test_a_gap_in_the_samples_breaks_the_run() -> None:
    """Two BAD samples 200 s apart with nothing between are no evidence of 200 s of BAD."""
    assert scan([B, B], step_s=200).episodes == []


def test_neutral_samples_neither_extend_nor_break_a_run() -> None:
    """Inside the hysteresis band: the BAD run continues across, and a NEUTRAL tail is not clear."""
    result = scan([B] * 20 + [N] * 5 + [B] * 11)
    assert [e.start_us for e in result.episodes] == [0]
    result = scan([B] * 31 + [N] * 100)
    assert result.ongoing is not None and not result.cleared


def test_worst_value_is_tracked() -> None:
    samples = [(i * S, B, float(v)) for i, v in enumerate([190, 199, 195] + [191] * 30)]
    found = scan_episodes(samples, fire_after_us=30 * S, clear_after_us=30 * S, max_gap_us=120 * S)
    assert found.episodes[0].worst == 199.0
