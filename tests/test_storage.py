"""Storage on real SQLite and PostgreSQL: migrations, engine settings, time round trips."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from cloud_ingest.storage import (
    AlertFilter,
    DeadLetterIn,
    OverrideRecord,
    current_revision,
    normalise_url,
    open_storage,
)
from cloud_ingest.storage.schema import metadata


def test_migration_creates_the_schema(db_url: str) -> None:
    s = open_storage(db_url)
    try:
        assert current_revision(s.engine) == "0008"
        insp = sa.inspect(s.engine)
        tables = set(insp.get_table_names()) - {"alembic_version"}
        assert tables == set(metadata.tables)
        for name, table in metadata.tables.items():
            cols = {c["name"]: c["nullable"] for c in insp.get_columns(name)}
            # names and nullability: a NOT NULL the metadata does not know would refuse rows
            assert cols == {c.name: c.nullable for c in table.columns}, name
        idx = {i["name"]: i for i in insp.get_indexes("alerts")}
        assert idx["uq_alerts_active_subject_condition"]["unique"]
        obs_idx = {i["name"]: i for i in insp.get_indexes("observations")}
        assert obs_idx["ix_observations_subject_time"]["column_names"] == [
            "subject_ref",
            "effective_time",
        ]
    finally:
        s.close()


def test_migration_is_idempotent_and_can_be_skipped(db_url: str) -> None:
    open_storage(db_url).close()
    s = open_storage(db_url)
    s.close()
    s = open_storage(db_url, migrate=False)
    assert s.counts().messages == 0
    s.close()


def test_unmigrated_database_is_not_created_without_migrate(sqlite_url: str) -> None:
    s = open_storage(sqlite_url, migrate=False)
    assert current_revision(s.engine) is None
    s.close()


def test_partial_unique_index_allows_resolved_duplicates(db_url: str) -> None:
    s = open_storage(db_url)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    row = {
        "subject_ref": "p1",
        "condition": "spo2-low-news2-3",
        "measure": "spo2",
        "priority": "high",
        "state": "resolved",
        "rule": "r",
        "threshold_value": 91.0,
        "threshold_unit": "%",
        "threshold_comparator": "<=",
        "threshold_source": "s",
        "explanation": "e",
        "first_obs_id": "a" * 32,
        "first_value": 88.0,
        "first_comparator": None,
        "first_time": now,
        "last_obs_id": "a" * 32,
        "last_value": 88.0,
        "last_comparator": None,
        "last_time": now,
        "trigger_count": 1,
        "simulated": False,
        "raised_at": now,
        "updated_at": now,
    }
    with s.write() as tx:
        tx.insert_alerts([row, row, dict(row, state="open")])
    from cloud_ingest.storage import ConflictError

    with pytest.raises(ConflictError), s.write() as tx:
        tx.insert_alerts([dict(row, state="acknowledged")])
    assert s.counts().alerts_total == 3
    s.close()


def test_datetimes_round_trip_as_aware_utc(db_url: str) -> None:
    s = open_storage(db_url)
    helsinki = timezone(timedelta(hours=2))
    at = datetime(2026, 3, 29, 2, 30, 15, 123456, tzinfo=helsinki)
    with s.write() as tx:
        tx.insert_dead_letters(
            [
                DeadLetterIn(
                    topic="t",
                    payload=b"\x00\xff",
                    code="not-json",
                    path="",
                    detail="d",
                    received_at=at,
                )
            ],
            now=at,
        )
    [d] = s.list_dead_letters()
    assert d.received_at == at
    assert d.received_at.tzinfo == UTC
    assert d.payload == b"\x00\xff"
    s.close()


def test_naive_datetimes_are_refused(sqlite_url: str) -> None:
    s = open_storage(sqlite_url)
    with pytest.raises(sa.exc.StatementError, match="naive"), s.write() as tx:
        tx.insert_dead_letters(
            [
                DeadLetterIn(
                    topic="t",
                    payload=b"",
                    code="c",
                    path="",
                    detail="d",
                    received_at=datetime(2026, 1, 1),
                )
            ],
            now=datetime(2026, 1, 1),
        )
    s.close()


def test_override_upsert(db_url: str) -> None:
    s = open_storage(db_url)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    rec = OverrideRecord(
        subject_ref="p1", condition="c", value=1.0, unit="%", set_by="a", set_at=at
    )
    s.put_override(rec)
    s.put_override(
        OverrideRecord(subject_ref="p1", condition="c", value=2.0, unit="%", set_by="b", set_at=at)
    )
    got = s.get_override("p1", "c")
    assert got is not None
    assert (got.value, got.set_by) == (2.0, "b")
    assert s.delete_override("p1", "c")
    assert s.get_override("p1", "c") is None
    s.close()


def test_sqlite_pragmas(tmp_path: Path) -> None:
    s = open_storage(f"sqlite:///{tmp_path / 'x.db'}")
    with s.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    s.close()


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg"),
        ("postgres://u@h/db", "postgresql+psycopg"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg"),
        ("sqlite:///x.db", "sqlite"),
    ],
)
def test_url_normalisation(url: str, driver: str) -> None:
    assert normalise_url(url).drivername == driver


def test_unsupported_database_refused() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        normalise_url("mysql://u@h/db")


def test_plain_postgresql_url_is_accepted(pg_url: str) -> None:
    plain = sa.make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    s = open_storage(plain)
    assert s.dialect == "postgresql"
    assert s.counts().observations == 0
    s.close()


def test_hot_path_columns_cover_the_tables() -> None:
    from cloud_ingest.storage.bulk import check_columns

    check_columns()


def test_store_envelopes_twice_in_one_transaction(db_url: str) -> None:
    """The hot path's staging (PostgreSQL) is reused within a transaction without leftovers."""
    from cloud_ingest.storage import InboundEnvelope
    from device_profiles.observation import DeviceIdentity, Observation, Provenance
    from gateway.wire import Subject, decode_observations, encode_observations

    t0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)

    def envelope(seq: int) -> InboundEnvelope:
        [m] = encode_observations(
            site="home-1",
            device_id="meter-1",
            device=DeviceIdentity(manufacturer="A", model="M", serial="S", transport="sim"),
            subject=Subject(kind="patient", ref="p1"),
            observations=[
                Observation(
                    measure="glucose.capillary",
                    unit="mmol/L",
                    value=5.0,
                    effective_time=t0 + timedelta(minutes=seq),
                    record_key=f"seq:{seq}",
                    provenance=Provenance(source="t"),
                )
            ],
            created_at=t0,
        )
        env = decode_observations(m.topic, m.payload)
        return InboundEnvelope(topic=m.topic, envelope=env, received_at=t0)

    s = open_storage(db_url)
    with s.write() as tx:
        first = tx.store_envelopes([envelope(1), envelope(2), envelope(1)])
        second = tx.store_envelopes([envelope(2), envelope(3)])
    assert (first.messages, first.duplicate_messages, len(first.new_readings)) == (2, 1, 2)
    assert (second.messages, second.duplicate_messages, len(second.new_readings)) == (1, 1, 1)
    assert second.new_readings[0].observation.observation.record_key == "seq:3"
    got = s.list_observations()
    assert sorted(o.record_key for o in got) == ["seq:1", "seq:2", "seq:3"]
    assert all(o.effective_time.tzinfo == UTC for o in got)
    assert got[0].quality == []
    assert got[0].provenance == {"source": "t"}
    s.close()


def test_upgrade_from_0002_keeps_alerts_and_carries_level_1_values_to_cgm(db_url: str) -> None:
    """A database with 0002 data upgrades in place: existing alerts become threshold alerts for
    clinicians (no team yet), and a patient's level 1 value also applies to CGM readings."""
    from cloud_ingest.storage.engine import create_engine, migrate

    engine = create_engine(db_url)
    try:
        migrate(engine, revision="0002")
        now = datetime(2026, 1, 1, tzinfo=UTC)
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO patient_thresholds (subject_ref, condition, value, unit, set_by,"
                    " set_at) VALUES ('p1', 'glucose-low-l1', 4.5, 'mmol/L', 'dr', :t)"
                ),
                {"t": now},
            )
            conn.execute(
                sa.insert(metadata.tables["alerts"]).values(
                    subject_ref="p1",
                    condition="glucose-low-l2",
                    measure="glucose.capillary",
                    priority="high",
                    state="open",
                    rule="r",
                    threshold_value=3.0,
                    threshold_unit="mmol/L",
                    threshold_comparator="<",
                    threshold_source="s",
                    explanation="e",
                    first_obs_id="a" * 32,
                    first_value=2.5,
                    first_time=now,
                    last_obs_id="a" * 32,
                    last_value=2.5,
                    last_time=now,
                    trigger_count=1,
                    simulated=False,
                    raised_at=now,
                    updated_at=now,
                )
            )
        migrate(engine)
        assert current_revision(engine) == "0008"
    finally:
        engine.dispose()
    s = open_storage(db_url)
    try:
        (a,) = s.list_alerts(AlertFilter())
        assert (a.kind, a.audience, a.team_id, a.escalation_level) == (
            "threshold",
            "clinician",
            None,
            0,
        )
        carried = s.get_override("p1", "cgm-low-l1")
        assert carried is not None
        assert (carried.value, carried.set_by) == (4.5, "dr")
    finally:
        s.close()


def test_a_device_binding_keeps_the_identity_of_its_newest_data(db_url: str) -> None:
    """Firmware and transport follow the newest data, whatever order messages arrive in (a hub
    uploading its backlog after an update delivers old data last), and a message that does not
    name them leaves them as they were."""
    from cloud_ingest.storage.records import DeviceSubjectRecord

    t0 = datetime(2026, 3, 1, 8, tzinfo=UTC)

    def binding(hour: int, firmware: str | None, *, last: int | None = None) -> DeviceSubjectRecord:
        return DeviceSubjectRecord(
            device_key="Acme|G1|SN1",
            subject_ref="p1",
            site="home-p1",
            device_id="meter-1",
            first_seen=t0 + timedelta(hours=hour),
            last_seen=t0 + timedelta(hours=hour if last is None else last),
            firmware=firmware,
            transport="ble" if firmware else None,
        )

    s = open_storage(db_url)
    try:

        def stored() -> tuple[str | None, str | None, datetime, datetime]:
            (row,) = s.device_subjects(subject_ref="p1")
            return row.firmware, row.transport, row.first_seen, row.last_seen

        with s.write() as tx:
            tx.upsert_device_subjects([binding(5, "2.0")])
        with s.write() as tx:  # the backlog from before the update arrives late
            tx.upsert_device_subjects([binding(1, "1.9")])
        assert stored() == ("2.0", "ble", t0 + timedelta(hours=1), t0 + timedelta(hours=5))
        with s.write() as tx:  # newer data that names no firmware erases nothing
            tx.upsert_device_subjects([binding(6, None)])
        assert stored()[:2] == ("2.0", "ble")
        with s.write() as tx:  # one batch, rows in any order: the newest row's identity
            tx.upsert_device_subjects([binding(9, "2.1"), binding(7, "2.0", last=8)])
        assert stored() == ("2.1", "ble", t0 + timedelta(hours=1), t0 + timedelta(hours=9))
    finally:
        s.close()
