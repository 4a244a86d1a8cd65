"""ledger_gap: records missing from a tracker boot's sequence, for longer than the grace.

The gateway sends live records ahead of a draining backlog, so a gap in the
ledger is normal for a while. A gap counts as loss once central has known of
it for ``gap_grace_s``: since the range after it was written (range rows
carry their write time). Records before the first one held count too (seq
starts at 1 with every boot). One incident per tracker names the missing
ranges of all its boots: P2 from ``gap_p2_records`` missing records, else
P3. It is updated (a repeat) when the loss grows, and resolved once every
gap of the tracker is filled, which happens when a late backlog or a
bundle brings the records in.
"""

from __future__ import annotations

from collections import defaultdict

from central.detectors._pass import DetectionPass
from central.ledger import SeqRange, merge_ranges
from central.store import RangeRow

__all__ = ["judge_ledger_gaps", "missing_ranges"]

_US = 1_000_000
#: Ranges named in an incident's summary; its details list them all.
_RANGES_IN_SUMMARY = 5


def missing_ranges(
    rows: list[RangeRow], now_us: int, grace_us: int
) -> tuple[list[SeqRange], list[SeqRange]]:
    """The missing ranges of one boot's range rows: (aged past the grace, all)."""
    held = merge_ranges((r.first_seq, r.last_seq) for r in rows)
    first_written: dict[int, int] = {}
    for r in rows:
        first_written[r.first_seq] = min(
            first_written.get(r.first_seq, r.written_at_us or 0), r.written_at_us or 0
        )
    gaps: list[tuple[SeqRange, int]] = []
    if held and held[0][0] > 1:
        gaps.append(((1, held[0][0] - 1), first_written.get(held[0][0], now_us)))
    for before, after in zip(held, held[1:], strict=False):
        known_since = first_written.get(after[0], now_us)  # the range that revealed the gap
        gaps.append(((before[1] + 1, after[0] - 1), known_since))
    aged = [gap for gap, since in gaps if now_us - since >= grace_us]
    return aged, [gap for gap, _ in gaps]


def judge_ledger_gaps(p: DetectionPass) -> None:
    """Raise, update or resolve ledger_gap per tracker."""
    s = p.settings
    by_boot: dict[tuple[str, str], list[RangeRow]] = defaultdict(list)
    for row in p.reader.ledger_rows():
        by_boot[(row.device_id, str(row.boot_id))].append(row)
    aged: dict[str, dict[str, list[SeqRange]]] = defaultdict(dict)
    any_gap: set[str] = set()
    where: dict[str, RangeRow] = {}
    for (device_id, boot_id), rows in sorted(by_boot.items()):
        old, everything = missing_ranges(rows, p.now_us, int(s.gap_grace_s * _US))
        where[device_id] = max(rows, key=lambda r: r.written_at_us or 0)
        if everything:
            any_gap.add(device_id)
        if old:
            aged[device_id][boot_id] = old
    for device_id in sorted(where):
        subject = f"device:{device_id}"
        if not p.mine(subject):
            continue
        if device_id in aged:
            _raise_gap(p, subject, device_id, aged[device_id], where[device_id])
        elif device_id not in any_gap:
            p.resolve("ledger_gap", subject, "every missing record has arrived")


def _raise_gap(
    p: DetectionPass,
    subject: str,
    device_id: str,
    boots: dict[str, list[SeqRange]],
    newest: RangeRow,
) -> None:
    missing = sum(last - first + 1 for ranges in boots.values() for first, last in ranges)
    named = [
        f"{first}-{last}" if first != last else str(first)
        for ranges in boots.values()
        for first, last in ranges
    ]
    more = f" (+{len(named) - _RANGES_IN_SUMMARY} more)" if len(named) > _RANGES_IN_SUMMARY else ""
    summary = (
        f"{device_id} lost {missing} records: seq {', '.join(named[:_RANGES_IN_SUMMARY])}{more}"
    )
    fields = dict(
        priority="P2" if missing >= p.settings.gap_p2_records else "P3",
        category="data",
        gateway_id=newest.gateway_id,
        site=newest.site,
        details={
            "records_missing": missing,
            "missing_ranges": {boot: [list(r) for r in ranges] for boot, ranges in boots.items()},
        },
    )
    existing = p.open_incident("ledger_gap", subject)
    if existing is None:
        p.ensure_open("ledger_gap", subject, summary, **fields)
    elif existing.details.get("records_missing") != missing:
        p.update_open(existing, summary, **fields)
