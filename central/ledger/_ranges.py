"""Sequence ranges: the arithmetic behind the loss ledger.

The ledger of a ``(device_id, boot_id)`` is the set of sequence numbers
central holds, kept as closed ranges ``(first, last)``. Writers only ever
*add* range rows (one per contiguous run of a written batch), so writers
running at once cannot corrupt each other: the set held is the union of
every range row, and the union is computed here, on read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["SeqRange", "LedgerEntry", "contiguous_runs", "merge_ranges", "ledger_entry"]

#: A closed range of sequence numbers, ``first <= last``.
SeqRange = tuple[int, int]


@dataclass(frozen=True)
class LedgerEntry:
    """What central holds of one boot of one device.

    Attributes:
        device_id: The tracker.
        boot_id: The tracker's boot (a UUID string); ``seq`` restarts at 1 with each boot.
        held: The merged ranges held, ascending and disjoint, non-adjacent.
        gateway_id: The gateway that delivered the newest range, when known.
        site: That gateway's site, when known.
    """

    device_id: str
    boot_id: str
    held: tuple[SeqRange, ...]
    gateway_id: str | None = None
    site: str | None = None
    missing: tuple[SeqRange, ...] = field(init=False)

    def __post_init__(self) -> None:
        missing = tuple(
            (a[1] + 1, b[0] - 1) for a, b in zip(self.held, self.held[1:], strict=False)
        )
        object.__setattr__(self, "missing", missing)

    @property
    def first_seq(self) -> int:
        return self.held[0][0]

    @property
    def last_seq(self) -> int:
        return self.held[-1][1]

    @property
    def records(self) -> int:
        """Distinct records held."""
        return sum(last - first + 1 for first, last in self.held)

    @property
    def gaps(self) -> int:
        """Records missing between the first and the last held."""
        return sum(last - first + 1 for first, last in self.missing)

    @property
    def head_missing(self) -> int:
        """Records missing before the first held (``seq`` starts at 1 at every boot)."""
        return self.first_seq - 1

    def as_json(self) -> dict[str, object]:
        """The shape ``pulsegate central ledger --json`` prints for one boot."""
        return {
            "device_id": self.device_id,
            "boot_id": self.boot_id,
            "records": self.records,
            "gaps": self.gaps,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "missing_ranges": [list(r) for r in self.missing],
            "head_missing": self.head_missing,
            "held_ranges": [list(r) for r in self.held],
            "gateway_id": self.gateway_id,
            "site": self.site,
        }


def contiguous_runs(seqs: Iterable[int]) -> list[SeqRange]:
    """Split sequence numbers (any order, duplicates allowed) into contiguous runs.

    >>> contiguous_runs([5, 1, 2, 3, 3, 7])
    [(1, 3), (5, 5), (7, 7)]
    """
    runs: list[SeqRange] = []
    for seq in sorted(set(seqs)):
        if runs and seq == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], seq)
        else:
            runs.append((seq, seq))
    return runs


def merge_ranges(ranges: Iterable[SeqRange]) -> tuple[SeqRange, ...]:
    """Union closed ranges; overlapping and adjacent ones join.

    >>> merge_ranges([(5, 9), (1, 3), (4, 4), (20, 21), (8, 12)])
    ((1, 12), (20, 21))
    """
    merged: list[SeqRange] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            if last > merged[-1][1]:
                merged[-1] = (merged[-1][0], last)
        else:
            merged.append((first, last))
    return tuple(merged)


def ledger_entry(
    device_id: str,
    boot_id: str,
    ranges: Iterable[SeqRange],
    gateway_id: str | None = None,
    site: str | None = None,
) -> LedgerEntry:
    """Build the ledger entry of one boot from its (unmerged) range rows."""
    held = merge_ranges(ranges)
    if not held:
        raise ValueError(f"no ranges for device {device_id!r} boot {boot_id}")
    return LedgerEntry(device_id, boot_id, held, gateway_id, site)
