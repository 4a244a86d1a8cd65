"""`pulsegate central dead-letters list|replay` against the real broker and real ingest workers.

Messages reach the dead-letter queue both real ways: a worker refusing a
poison message, and RabbitMQ's own delivery limit on the ingest queue.
The store is the embedded SQLite one; the broker is the real RabbitMQ.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pika
import pytest

from central.settings import load_settings
from central.store import open_store
from central_ingest.testdata import (
    PULSEGATE,
    REPO,
    make_record,
    message_body,
    message_headers,
    publish,
    run_cli,
    write_config,
)
from firmware_shim.amqp_topology import DEAD_LETTER_QUEUE, DELIVERY_LIMIT, INGEST_QUEUE

pytestmark = [pytest.mark.servers]


def _depths(url: str) -> tuple[int, int]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        return (channel.queue_declare(INGEST_QUEUE, passive=True).method.message_count,
                channel.queue_declare(DEAD_LETTER_QUEUE, passive=True).method.message_count)
    finally:
        connection.close()


def _wait_depths(url: str, wanted: tuple[int, int], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while _depths(url) != wanted:
        assert time.monotonic() < deadline, f"queues (ingest, dead-letter) are {_depths(url)}, wanted {wanted}"
        time.sleep(0.2)


def _exhaust_delivery_limit(url: str) -> None:
    """Hand the ingest queue's one message back, unprocessed, until RabbitMQ dead-letters it."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for _ in range(DELIVERY_LIMIT + 1):
            method, _, _ = channel.basic_get(INGEST_QUEUE, auto_ack=False)
            if method is None:
                break
            channel.basic_nack(method.delivery_tag, requeue=True)
    finally:
        connection.close()


def _worker(config: Path, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen([*PULSEGATE, "central", "ingest", "--config", str(config)],
                                stdout=out, stderr=subprocess.STDOUT, cwd=REPO)


def _stop(worker: subprocess.Popen) -> None:
    worker.send_signal(signal.SIGTERM)
    worker.wait(60)


def test_list_and_replay_dead_letters(tmp_path: Path, amqp_url: str) -> None:
    config = write_config(tmp_path / "central.toml", tmp_path / "state",
                          amqp={"url": amqp_url}, ingest={"metrics_address": "", "batch_wait_ms": 20})
    assert run_cli("central", "db", "init", "--config", str(config)).returncode == 0
    boot = "6b1f8a36-2e4f-4d39-9c5e-3e0f1f2b7a10"
    records = [make_record("dl-1", boot, seq) for seq in range(1, 11)]
    # 1. A worker dead-letters a poison message (a wrong format header).
    poison = dict(message_headers(1), **{"pulsegate-format": "telemetry-ocf/99"})
    publish(amqp_url, [(message_body(records[:1]), poison)], routing_key="telemetry.gym-a.gw-poison")
    worker = _worker(config, tmp_path / "worker-1.log")
    try:
        _wait_depths(amqp_url, (0, 1))
    finally:
        _stop(worker)
    # 2. With no worker running, a valid message exhausts the delivery limit.
    publish(amqp_url, [(message_body(records), message_headers(len(records)))], routing_key="telemetry.gym-a.gw-1")
    _exhaust_delivery_limit(amqp_url)
    _wait_depths(amqp_url, (0, 2))

    listed = run_cli("central", "dead-letters", "list", "--json", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    report = json.loads(listed.stdout)
    assert report["total"] == 2
    by_reason = {m["reason"]: m for m in report["messages"]}
    assert set(by_reason) == {"bad_header", "delivery_limit"}
    assert by_reason["bad_header"]["routing_key"] == "telemetry.gym-a.gw-poison"
    assert by_reason["delivery_limit"]["routing_key"] == "telemetry.gym-a.gw-1"
    assert by_reason["delivery_limit"]["gateway_id"] == "gw-1"
    _wait_depths(amqp_url, (0, 2))  # listing leaves them where they are

    replay = run_cli("central", "dead-letters", "replay", "--reason", "delivery_limit", "--config", str(config))
    assert replay.returncode == 0, replay.stderr
    assert "replayed 1 message(s); 1 skipped by --reason; 1 left" in replay.stdout
    _wait_depths(amqp_url, (1, 1))

    # 3. A worker now ingests the replayed message; everything else replayed comes back.
    worker = _worker(config, tmp_path / "worker-2.log")
    try:
        _wait_depths(amqp_url, (0, 1))
        assert run_cli("central", "dead-letters", "replay", "--config", str(config)).returncode == 0
        _wait_depths(amqp_url, (0, 1))  # the poison message, dead-lettered again
    finally:
        _stop(worker)
    store = open_store(load_settings(config))
    try:
        entries = store.ledger("dl-1")
    finally:
        store.close()
    assert [(e.records, e.first_seq, e.last_seq, e.gaps) for e in entries] == [(10, 1, 10, 0)]
    again = json.loads(run_cli("central", "dead-letters", "list", "--json", "--config", str(config)).stdout)
    assert [m["reason"] for m in again["messages"]] == ["bad_header"]


def test_an_unreachable_broker_is_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path / "central.toml", tmp_path / "state",
                          amqp={"url": "amqp://guest:guest@127.0.0.1:1/%2F"})
    result = run_cli("central", "dead-letters", "list", "--config", str(config))
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "cannot reach the broker at 127.0.0.1:1" in result.stderr


def test_a_missing_vhost_is_named_as_a_refusal_not_an_outage(tmp_path: Path, amqp_url: str) -> None:
    missing = amqp_url.rsplit("/", 1)[0] + "/pulsegate-no-such-vhost"
    config = write_config(tmp_path / "central.toml", tmp_path / "state", amqp={"url": missing})
    result = run_cli("central", "dead-letters", "list", "--config", str(config))
    assert result.returncode != 0
    assert "refused user 'guest' on virtual host 'pulsegate-no-such-vhost'" in result.stderr, result.stderr


@pytest.mark.parametrize("refusal", ["vhost", "password"])
def test_ingest_refused_by_the_broker_ends_in_one_line_with_exit_2(
    tmp_path: Path, amqp_url: str, refusal: str
) -> None:
    """A refusal is an answer, not an outage: the worker stops at once instead of retrying forever."""
    base, vhost = amqp_url.rsplit("/", 1)
    url = f"{base}/pulsegate-no-such-vhost" if refusal == "vhost" else amqp_url.replace("guest:guest@", "guest:wrong@")
    config = write_config(tmp_path / "central.toml", tmp_path / "state", amqp={"url": url})
    assert run_cli("central", "db", "init", "--config", str(config)).returncode == 0
    result = run_cli("central", "ingest", "--config", str(config), env={"PULSEGATE_INGEST_METRICS_ADDRESS": ""})
    assert result.returncode == 2, result.stderr
    expected_vhost = "pulsegate-no-such-vhost" if refusal == "vhost" else vhost
    assert result.stderr.startswith(
        f"pulsegate: error: the broker at 127.0.0.1:5672 refused user 'guest' on virtual host '{expected_vhost}'"
    ), result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr


def test_a_vhost_where_ingest_never_ran_has_no_dead_letter_queue_and_gets_none(tmp_path: Path, amqp_url: str) -> None:
    config = write_config(tmp_path / "central.toml", tmp_path / "state", amqp={"url": amqp_url})
    result = run_cli("central", "dead-letters", "list", "--config", str(config))
    assert result.returncode != 0
    assert "no queue 'pulsegate.dead-letter' on this broker and virtual host" in result.stderr, result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr  # pika's own WARNING stays out
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker):  # listing created nothing
            connection.channel().queue_declare(DEAD_LETTER_QUEUE, passive=True)
    finally:
        if connection.is_open:
            connection.close()


@pytest.mark.parametrize("url", ["", "http://127.0.0.1/", "amqp://127.0.0.1:notaport/", "127.0.0.1"])
def test_a_malformed_amqp_url_is_refused_in_one_line(tmp_path: Path, url: str) -> None:
    config = write_config(tmp_path / "central.toml", tmp_path / "state")
    result = run_cli("central", "dead-letters", "list", "--config", str(config), env={"PULSEGATE_AMQP_URL": url})
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "[amqp]" in result.stderr and "with PULSEGATE_AMQP_URL from the environment: url" in result.stderr, result.stderr
