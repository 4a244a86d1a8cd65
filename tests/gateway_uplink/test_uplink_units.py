"""Uplink parts that need no broker: settings, message building, the outbox cursors, offline status."""

from __future__ import annotations

import re
import sqlite3
import uuid
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from firmware_shim import encode_record, split_soe
from firmware_shim.uplink_format import MAX_MESSAGE_BYTES, read_message
from gateway.errors import GatewayError
from gateway.uplink import (
    Uplink,
    UplinkConfigError,
    UplinkSettings,
    UplinkStoreError,
    uplink_status_from_file,
)
from gateway.uplink._messages import OutboxRow, build_messages
from gateway.uplink._outbox_queue import OutboxQueue
from gateway_uplink.outbox_files import OutboxFile, make_record
from gateway_uplink.uplink_harness import wait_for
from pulsegate.config import ConfigError, load_config

# -- settings --------------------------------------------------------------------


def test_default_settings_are_valid_and_off() -> None:
    settings = UplinkSettings()
    assert settings.enabled is False
    assert settings.broker_address == "amqp://127.0.0.1:5672/%2F"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"amqp_url": "http://broker/"}, "must start with amqp:// or amqps://"),
        ({"amqp_url": "amqp:///vhost"}, "names no host"),
        ({"username": "gw-1"}, "set both username and password"),
        ({"tls_cert_file": Path("/etc/hostname")}, "set both tls_cert_file and tls_key_file"),
        ({"tls_ca_file": Path("/nonexistent/ca.pem")}, "'/nonexistent/ca.pem' is not a readable file"),
        ({"codec": "snappy"}, "codec must be one of null, deflate, got 'snappy'"),
        ({"batch_max_records": 0}, "batch_max_records must be 1.."),
        ({"backoff_min_s": 5.0, "backoff_max_s": 1.0}, "need 0 < backoff_min_s <= backoff_max_s"),
        ({"poll_interval_s": 0.0}, "poll_interval_s must be positive"),
    ],
    ids=["scheme", "host", "half-credentials", "half-client-cert", "missing-ca", "codec", "batch", "backoff", "poll"],
)
def test_bad_settings_name_the_key(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        UplinkSettings(**kwargs)


def test_broker_address_hides_credentials() -> None:
    settings = UplinkSettings(amqp_url="amqps://gw-7:s3cret@broker.example:5671/gyms")
    assert settings.broker_address == "amqps://broker.example:5671/gyms"
    assert settings.uses_tls


def test_settings_load_through_the_config_loader(tmp_path: Path) -> None:
    from dataclasses import dataclass, field

    @dataclass
    class Config:
        uplink: UplinkSettings = field(default_factory=UplinkSettings)

    path = tmp_path / "gateway.toml"
    path.write_text('[uplink]\nenabled = true\namqp_url = "amqp://10.0.0.5/"\nbatch_max_records = 500\n')
    config = load_config(Config, path, env={"PULSEGATE_UPLINK_CODEC": "null"})
    assert (config.uplink.enabled, config.uplink.batch_max_records, config.uplink.codec) == (True, 500, "null")
    path.write_text("[uplink]\nmax_in_flight_messages = 0\n")
    with pytest.raises(ConfigError, match=r"\[uplink\] in .*max_in_flight_messages must be 1..1000, got 0"):
        load_config(Config, path, env={})


# -- messages ---------------------------------------------------------------------


def _row(row_id: int, record: dict, version: int = 2) -> OutboxRow:
    info, datum = split_soe(encode_record(record, version))
    return OutboxRow(row_id, info.fingerprint, datum, 1_000 + row_id)


def test_messages_group_rows_by_writer_schema() -> None:
    boot = str(uuid.uuid4())
    rows = [_row(i, make_record("t", boot, i, version=1 if i % 3 == 0 else 2), 1 if i % 3 == 0 else 2) for i in range(1, 10)]
    messages, unknown = build_messages(rows, gateway_id="gw-1", codec="deflate", live=True)
    assert unknown == []
    assert [m.message_id for m in messages] == ["gw-1:1-8", "gw-1:3-9"]
    assert [m.row_ids for m in messages] == [(1, 2, 4, 5, 7, 8), (3, 6, 9)]
    assert [[r["seq"] for r in read_message(m.body)] for m in messages] == [[1, 2, 4, 5, 7, 8], [3, 6, 9]]
    assert (messages[0].oldest_received_at_us, messages[0].newest_received_at_us) == (1_001, 1_008)


@pytest.mark.parametrize("codec", ["null", "deflate"])
def test_messages_stay_under_the_size_cap(codec: str) -> None:
    boot = str(uuid.uuid4())
    # About 60 KB per datum, random-ish so deflate cannot shrink it much.
    rows = [_row(i, make_record("t", boot, i) | {"rr_intervals_ms": [(i * 7919 + k * 104729) % 1_000_000 for k in range(20_000)]})
            for i in range(1, 41)]
    messages, _ = build_messages(rows, gateway_id="gw-1", codec=codec, live=False)
    assert len(messages) >= 2
    assert all(len(m.body) <= MAX_MESSAGE_BYTES for m in messages)
    assert [i for m in messages for i in m.row_ids] == list(range(1, 41))
    assert sum(1 for m in messages for _ in read_message(m.body)) == 40


def test_rows_of_an_unknown_schema_are_set_aside() -> None:
    good = _row(1, make_record("t", str(uuid.uuid4()), 1))
    alien = OutboxRow(2, b"\x00" * 8, good.datum, 5)
    messages, unknown = build_messages([good, alien], gateway_id="gw-1", codec="null", live=False)
    assert [m.row_ids for m in messages] == [(1,)]
    assert unknown == [alien]


# -- the outbox cursors ---------------------------------------------------------------


def test_live_rows_come_before_the_backlog(outbox: OutboxFile) -> None:
    outbox.insert_device("old", 10)
    queue = OutboxQueue(outbox.path)
    assert queue.start_session() == 10
    _, live_ids = outbox.insert_device("new", 3)
    rows, live = queue.next_rows(4)
    assert live and [r.id for r in rows] == live_ids
    batches = [queue.next_rows(4) for _ in range(4)]
    assert [([r.id for r in rows], live) for rows, live in batches] == [
        ([1, 2, 3, 4], False), ([5, 6, 7, 8], False), ([9, 10], False), ([], False)]
    queue.close()


def test_reused_ids_after_deleting_the_newest_rows_count_as_new(outbox: OutboxFile) -> None:
    """Without AUTOINCREMENT SQLite reuses max(id)+1; the cursors must not skip those rows."""
    outbox.insert_device("a", 5)
    queue = OutboxQueue(outbox.path)
    queue.start_session()
    rows, _ = queue.next_rows(10)
    queue.delete_confirmed([r.id for r in rows], {"k": "v"})
    _, new_ids = outbox.insert_device("b", 3)
    assert new_ids == [1, 2, 3], "SQLite reused the ids (the case under test)"
    rows, live = queue.next_rows(10)
    assert live and [r.id for r in rows] == [1, 2, 3]
    queue.close()


def test_delete_confirmed_removes_exactly_the_given_rows(outbox: OutboxFile) -> None:
    outbox.insert_device("a", 10)
    queue = OutboxQueue(outbox.path)
    queue.delete_confirmed([2, 3, 4, 7, 9], {"confirmed_records_total": "5"})
    assert outbox.ids() == [1, 5, 6, 8, 10]
    assert dict(outbox.db.execute("SELECT key, value FROM uplink_state")) == {"confirmed_records_total": "5"}
    queue.close()


# -- offline status and construction errors ----------------------------------------------


def test_status_from_file_needs_an_outbox(tmp_path: Path) -> None:
    with pytest.raises(UplinkStoreError, match="does not exist; start the gateway once"):
        uplink_status_from_file(tmp_path / "missing.sqlite")
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(UplinkStoreError, match="is not a gateway outbox"):
        uplink_status_from_file(other)


def test_status_from_file_counts_the_backlog(outbox: OutboxFile) -> None:
    outbox.insert([(make_record("a", str(uuid.uuid4()), 1), 2)], received_at_us=1_000_000)
    outbox.insert([(make_record("a", str(uuid.uuid4()), 2), 2)])
    status = uplink_status_from_file(outbox.path)
    assert (status["running"], status["state"], status["backlog_records"]) == (False, "down", 2)
    assert status["backlog_oldest_age_s"] > 1e9  # received at 1970-01-01T00:00:01


def test_ids_that_cannot_be_routing_key_words_are_refused(outbox: OutboxFile) -> None:
    with pytest.raises(GatewayError, match=r"gateway id 'gw\.1' cannot be used in a routing key"):
        Uplink(UplinkSettings(), outbox_path=outbox.path, gateway_id="gw.1", site="s", registry=CollectorRegistry())


def test_unloadable_tls_files_are_a_config_error(tmp_path: Path, outbox: OutboxFile) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate\n")
    settings = UplinkSettings(amqp_url="amqps://127.0.0.1/", tls_ca_file=ca)
    with pytest.raises(UplinkConfigError, match="uplink TLS files cannot be loaded"):
        Uplink(settings, outbox_path=outbox.path, gateway_id="gw-1", site="s", registry=CollectorRegistry())


def test_start_refuses_a_file_that_is_not_an_outbox(tmp_path: Path) -> None:
    uplink = Uplink(UplinkSettings(), outbox_path=tmp_path / "none.sqlite", gateway_id="gw-1", site="s",
                    registry=CollectorRegistry())
    with pytest.raises(UplinkStoreError):
        uplink.start()


def test_stop_during_backoff_returns_promptly(outbox: OutboxFile) -> None:
    """A long backoff does not hold stop() up: the sleep is interruptible."""
    import socket
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    uplink = Uplink(UplinkSettings(amqp_url=f"amqp://127.0.0.1:{port}/", backoff_min_s=30, backoff_max_s=60),
                    outbox_path=outbox.path, gateway_id="gw-1", site="s", registry=CollectorRegistry())
    uplink.start()
    wait_for(lambda: uplink.status()["state"] == "down", what="the first failed attempt")
    started = time.monotonic()
    uplink.stop()
    assert time.monotonic() - started < 2.0
