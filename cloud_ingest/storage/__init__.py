"""Storage for cloud ingest: the only importer of SQLAlchemy (and of the SQL drivers).

:func:`open_storage` opens SQLite or PostgreSQL and upgrades the schema with Alembic
(``cloud_ingest/migrations``). Callers get plain records (:mod:`.records`), never SQLAlchemy rows.
"""

from cloud_ingest.storage.engine import current_revision, normalise_url
from cloud_ingest.storage.records import (
    AlertChangedError,
    AlertEventIn,
    AlertEventRecord,
    AlertNotFoundError,
    AlertRecord,
    ConflictError,
    Counts,
    DeadLetterIn,
    DeadLetterRecord,
    EventFacts,
    EventOutcome,
    EventRecord,
    InboundEnvelope,
    InboundEvents,
    ObservationRecord,
    OverrideRecord,
    ReadingFacts,
    SiteRecord,
    StatusIn,
    StorageError,
    StoredEvent,
    StoredReading,
    StoreOutcome,
    same_event,
    same_reading,
)
from cloud_ingest.storage.store import AlertFilter, Storage, WriteTx, open_storage

__all__ = [
    "AlertChangedError",
    "AlertEventIn",
    "AlertEventRecord",
    "AlertFilter",
    "AlertNotFoundError",
    "AlertRecord",
    "ConflictError",
    "Counts",
    "DeadLetterIn",
    "DeadLetterRecord",
    "EventFacts",
    "EventOutcome",
    "EventRecord",
    "InboundEnvelope",
    "InboundEvents",
    "ObservationRecord",
    "OverrideRecord",
    "ReadingFacts",
    "SiteRecord",
    "StatusIn",
    "Storage",
    "StorageError",
    "StoreOutcome",
    "StoredEvent",
    "StoredReading",
    "WriteTx",
    "current_revision",
    "normalise_url",
    "open_storage",
    "same_event",
    "same_reading",
]
