"""Central ingest: AMQP messages and bundle files into the store.

Both paths decode to :class:`DecodedBatch` and write through
:func:`accept_batches`, so a bundle lands exactly as live traffic does.
"""

from central.ingest._decode import (
    DecodedBatch,
    PoisonMessage,
    accept_batches,
    check_records,
    decode_delivery,
    writer_version,
)
from central.ingest._import import ImportResult, import_bundle
from central.ingest._worker import IngestWorker

__all__ = [
    "DecodedBatch",
    "ImportResult",
    "IngestWorker",
    "PoisonMessage",
    "accept_batches",
    "check_records",
    "decode_delivery",
    "import_bundle",
    "writer_version",
]
