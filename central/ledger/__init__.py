"""The loss ledger: the contiguous sequence ranges central holds per device boot.

How it stays correct with several ingest processes at once: a writer never
reads-modifies-writes. After a batch's telemetry rows are accepted, it adds
one idempotent row per contiguous run of the batch, ``(device, boot, first,
last)``; a redelivered batch writes the same rows again. The ledger is the
union of those rows, merged on read (:func:`merge_ranges`). Compaction
(:meth:`central.store.TelemetryStore.compact_ledger`) writes the merged
range *before* deleting the rows it covers, so the union never shrinks, even
with two compactions racing. No lightweight transaction is needed.
"""

from central.ledger._ranges import (
    LedgerEntry,
    SeqRange,
    contiguous_runs,
    ledger_entry,
    merge_ranges,
)

__all__ = ["LedgerEntry", "SeqRange", "contiguous_runs", "ledger_entry", "merge_ranges"]
