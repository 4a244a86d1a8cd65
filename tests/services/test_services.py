"""The real RabbitMQ and Cassandra servers that packaging/services/pulsegate-services runs.

Every test drives the script as a subprocess, the way the Makefile and CI do,
and talks to the servers with the same client libraries the product uses.
Tests that stop a server start it again; the module fixture checks at the end
that both are up, so later tests find them running.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pika.exceptions
import pytest
from cassandra.cluster import Cluster, Session
from cassandra.policies import WhiteListRoundRobinPolicy

pytestmark = pytest.mark.servers

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "packaging" / "services" / "pulsegate-services"
# The script honours PULSEGATE_SERVICES_STATE_DIR; so do these tests.
STATE_DIR = Path(os.environ.get("PULSEGATE_SERVICES_STATE_DIR", REPO_ROOT / ".state" / "services"))
AMQP_PORT = 5672
CQL_PORT = 9042
# A Cassandra start on two shared cores takes 10-20 s; leave room for a cold one.
SCRIPT_TIMEOUT_S = 300


def run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run pulsegate-services with ``args`` and return what it did."""
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
        env=env,
        check=False,
    )


def run_ok(*args: str) -> str:
    """Run pulsegate-services, fail the test with its output unless it exits 0; return stdout."""
    result = run_script(*args)
    assert result.returncode == 0, (
        f"{args} exited {result.returncode}:\n{result.stdout}{result.stderr}"
    )
    return result.stdout


def amqp_connection() -> pika.BlockingConnection:
    return pika.BlockingConnection(
        pika.ConnectionParameters(
            host="127.0.0.1",
            port=AMQP_PORT,
            credentials=pika.PlainCredentials("guest", "guest"),
            connection_attempts=1,
            socket_timeout=5,
        )
    )


def declare_quorum_queue(channel: pika.adapters.blocking_connection.BlockingChannel) -> str:
    name = f"pulsegate.services-test.{uuid.uuid4().hex[:12]}"
    channel.queue_declare(name, durable=True, arguments={"x-queue-type": "quorum"})
    return name


def publish_confirmed(queue: str, body: bytes) -> None:
    """Publish one persistent message and return only once the broker confirmed it."""
    connection = amqp_connection()
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        # With confirms on, basic_publish blocks until the ack; mandatory makes an unroutable message raise.
        channel.basic_publish(
            "", queue, body, properties=pika.BasicProperties(delivery_mode=2), mandatory=True
        )
    finally:
        connection.close()


def get_one(queue: str) -> bytes | None:
    """Take one message off ``queue`` (acknowledged), or None if it is empty."""
    connection = amqp_connection()
    try:
        channel = connection.channel()
        method, _properties, body = channel.basic_get(queue, auto_ack=False)
        if method is None:
            return None
        channel.basic_ack(method.delivery_tag)
        return body
    finally:
        connection.close()


def delete_queue(queue: str) -> None:
    connection = amqp_connection()
    try:
        connection.channel().queue_delete(queue)
    finally:
        connection.close()


def port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def status_json(
    *names: str, env: dict[str, str] | None = None
) -> tuple[int, dict[str, dict[str, object]]]:
    result = run_script("status", *names, "--json", env=env)
    return result.returncode, json.loads(result.stdout)


@pytest.fixture(scope="module", autouse=True)
def servers_running() -> Iterator[None]:
    """Both servers up before the first test and after the last."""
    run_ok("start")
    yield
    run_ok("start")
    code, states = status_json()
    assert code == 0 and {s["state"] for s in states.values()} == {"running"}, states


def cql_cluster() -> Cluster:
    return Cluster(
        ["127.0.0.1"],
        port=CQL_PORT,
        protocol_version=5,
        load_balancing_policy=WhiteListRoundRobinPolicy(["127.0.0.1"]),
    )


@pytest.fixture
def keyspace() -> Iterator[str]:
    """A fresh keyspace for one test, dropped afterwards over a new connection
    (a test may have restarted the server under the old one)."""
    name = f"services_test_{uuid.uuid4().hex[:8]}"
    cluster = cql_cluster()
    try:
        cluster.connect().execute(
            f"CREATE KEYSPACE {name} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
        )
    finally:
        cluster.shutdown()
    yield name
    cluster = cql_cluster()
    try:
        cluster.connect().execute(f"DROP KEYSPACE IF EXISTS {name}")
    finally:
        cluster.shutdown()


@pytest.fixture
def cql_session() -> Iterator[Session]:
    cluster = cql_cluster()
    yield cluster.connect()
    cluster.shutdown()


def test_quorum_queue_round_trip_with_publisher_confirm() -> None:
    """A confirmed persistent message on a durable quorum queue comes back byte for byte."""
    connection = amqp_connection()
    channel = connection.channel()
    queue = declare_quorum_queue(channel)
    ok = channel.queue_declare(queue, passive=True)
    connection.close()
    assert ok.method.message_count == 0
    body = os.urandom(64)
    try:
        publish_confirmed(queue, body)
        assert get_one(queue) == body
        assert get_one(queue) is None
    finally:
        delete_queue(queue)


def test_queue_type_is_quorum_on_the_single_node() -> None:
    """Redeclaring the queue as classic is refused: the broker really made a quorum queue."""
    connection = amqp_connection()
    channel = connection.channel()
    queue = declare_quorum_queue(channel)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "classic"})
    assert refused.value.reply_code == 406  # PRECONDITION_FAILED: inequivalent x-queue-type
    connection.channel().queue_delete(queue)
    connection.close()


def test_cql_write_then_read(cql_session: Session, keyspace: str) -> None:
    """A row written with CQL reads back with the same values."""
    cql_session.execute(
        f"CREATE TABLE {keyspace}.readings (device_id text, ts bigint, bpm int, PRIMARY KEY (device_id, ts))"
    )
    insert = cql_session.prepare(
        f"INSERT INTO {keyspace}.readings (device_id, ts, bpm) VALUES (?, ?, ?)"
    )
    for ts, bpm in ((3, 142), (1, 61), (2, 75)):
        cql_session.execute(insert, ("tracker-7", ts, bpm))
    rows = cql_session.execute(
        f"SELECT ts, bpm FROM {keyspace}.readings WHERE device_id = %s", ("tracker-7",)
    )
    # Clustering order is ascending ts, whatever the write order.
    assert [(row.ts, row.bpm) for row in rows] == [(1, 61), (2, 75), (3, 142)]


def test_broker_stop_start_keeps_persistent_message() -> None:
    """A confirmed message survives `stop rabbitmq` + `start rabbitmq`; status follows each step."""
    connection = amqp_connection()
    queue = declare_quorum_queue(connection.channel())
    connection.close()
    body = b"survives a broker restart " + uuid.uuid4().bytes
    publish_confirmed(queue, body)

    stopped = run_ok("stop", "rabbitmq")
    assert stopped.startswith("rabbitmq: stopped in ")
    assert not port_accepts(AMQP_PORT)
    code, states = status_json()
    assert code == 3
    assert (states["rabbitmq"]["state"], states["rabbitmq"]["pid"]) == ("stopped", None)
    assert states["cassandra"]["state"] == "running"
    assert run_ok("stop", "rabbitmq") == "rabbitmq: already stopped\n"

    started = run_ok("start", "rabbitmq")
    assert started.startswith("rabbitmq: up at amqp://guest:guest@127.0.0.1:5672/ in ")
    try:
        assert get_one(queue) == body
    finally:
        delete_queue(queue)


def test_broker_crash_keeps_confirmed_message() -> None:
    """After SIGKILL (`stop --hard`) the confirmed message is still there: the ack meant on disk."""
    connection = amqp_connection()
    queue = declare_quorum_queue(connection.channel())
    connection.close()
    # RabbitMQ 3.10's Ra saves its directory of queues to disk every 500 ms
    # (names.dets auto_save); a queue declared within that window of a SIGKILL
    # is not restarted on boot. Real gateways declare long before any crash.
    time.sleep(1.0)
    bodies = [f"crash-{n}".encode() for n in range(20)]
    for body in bodies:
        publish_confirmed(queue, body)

    assert run_ok("stop", "--hard", "rabbitmq").startswith("rabbitmq: killed in ")
    run_ok("start", "rabbitmq")
    try:
        assert [get_one(queue) for _ in bodies] == bodies
        assert get_one(queue) is None
    finally:
        delete_queue(queue)


def test_cassandra_crash_and_restart_keeps_written_rows(
    cql_session: Session, keyspace: str
) -> None:
    """Rows acknowledged before a SIGKILL come back after the restart (commit log replay)."""
    cql_session.execute(f"CREATE TABLE {keyspace}.marks (id int PRIMARY KEY, note text)")
    insert = cql_session.prepare(f"INSERT INTO {keyspace}.marks (id, note) VALUES (?, ?)")
    expected = {n: f"note {n} {uuid.uuid4().hex}" for n in range(50)}
    for key, note in expected.items():
        cql_session.execute(insert, (key, note))

    assert run_ok("stop", "--hard", "cassandra").startswith("cassandra: killed in ")
    assert not port_accepts(CQL_PORT)
    started = run_ok("start", "cassandra")
    assert started.startswith("cassandra: up at cql://127.0.0.1:9042 in ")

    cluster = cql_cluster()
    try:
        rows = cluster.connect().execute(f"SELECT id, note FROM {keyspace}.marks")
        assert {row.id: row.note for row in rows} == expected
    finally:
        cluster.shutdown()


def test_start_when_up_reuses_the_running_servers() -> None:
    """A second `start` finds both servers up, says so, and keeps the same processes."""
    _code, before = status_json()
    began = time.monotonic()
    out = run_ok("start")
    took_s = time.monotonic() - began
    lines = out.splitlines()
    assert lines[0].startswith(
        f"rabbitmq: already up at amqp://guest:guest@127.0.0.1:5672/ (pid {before['rabbitmq']['pid']};"
    )
    assert lines[1].startswith(
        f"cassandra: already up at cql://127.0.0.1:9042 (pid {before['cassandra']['pid']};"
    )
    assert took_s < 10


def test_status_text_and_exit_code_when_running() -> None:
    """`status` prints one line per server and exits 0 when both answer."""
    result = run_script("status")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["rabbitmq", "cassandra"]
    assert all(": running (pid " in line for line in lines)
    assert lines[0].endswith(f"logs in {STATE_DIR / 'rabbitmq' / 'logs'}")
    assert lines[1].endswith(f"logs in {STATE_DIR / 'cassandra' / 'logs'}")


def test_stale_pid_file_is_ignored() -> None:
    """A pid file left by a dead run that now names an unrelated live process does not fool start or stop."""
    run_ok("stop", "rabbitmq")
    pid_file = STATE_DIR / "rabbitmq" / "server.pid"
    # This test process is alive but is not a broker: it must not be signalled or reported.
    pid_file.write_text(json.dumps({"pid": os.getpid(), "started_at": 0.0}))
    code, states = status_json()
    assert code == 3 and states["rabbitmq"]["state"] == "stopped"
    assert run_ok("stop", "rabbitmq") == "rabbitmq: already stopped\n"
    assert run_ok("start", "rabbitmq").startswith("rabbitmq: up at ")
    assert json.loads(pid_file.read_text())["pid"] != os.getpid()


def test_port_held_by_a_stranger_is_a_one_line_error() -> None:
    """If something else listens on 5672, start refuses with one line naming the port and the holder."""
    run_ok("stop", "rabbitmq")
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", AMQP_PORT))
    squatter.listen()
    try:
        result = run_script("start", "rabbitmq")
    finally:
        squatter.close()
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(
        f"pulsegate-services: error: rabbitmq needs port {AMQP_PORT}, but pid {os.getpid()} holds it ("
    )
    assert line.endswith("); stop that process, then run start again")
    run_ok("start", "rabbitmq")


def test_leftover_broker_of_another_checkout_is_replaced(tmp_path: Path) -> None:
    """A broker this script started for another state dir is stopped, and this checkout's starts."""
    run_ok("stop", "rabbitmq")
    other_env = {**os.environ, "PULSEGATE_SERVICES_STATE_DIR": str(tmp_path / "other-checkout")}
    other = run_script("start", "rabbitmq", env=other_env)
    assert other.returncode == 0, other.stderr
    assert str(tmp_path / "other-checkout" / "rabbitmq" / "logs") in other.stdout

    started = run_script("start", "rabbitmq")
    assert started.returncode == 0, started.stderr
    assert "started for another checkout" in started.stderr
    assert run_script("status", "rabbitmq", env=other_env).returncode == 3
    code, states = status_json()
    assert states["rabbitmq"]["state"] == "running"


def test_broker_of_a_deleted_checkout_at_the_same_path_is_replaced(tmp_path: Path) -> None:
    """A checkout deleted while its broker runs, then cloned again at the same path, gets a new broker.

    The old broker's marker still names this path, but its state folder is
    gone: adopting it would leave the new checkout a broker without files.
    """
    run_ok("stop", "rabbitmq")
    checkout_env = {**os.environ, "PULSEGATE_SERVICES_STATE_DIR": str(tmp_path / "clone" / "services")}
    first = run_script("start", "rabbitmq", env=checkout_env)
    assert first.returncode == 0, first.stderr
    old_pid = status_json("rabbitmq", env=checkout_env)[1]["rabbitmq"]["pid"]
    shutil.rmtree(tmp_path / "clone")  # as 'rm -rf' of the checkout, servers still running

    again = run_script("start", "rabbitmq", env=checkout_env)
    assert again.returncode == 0, again.stderr
    assert f"pid {old_pid} was started for a deleted copy of" in again.stderr
    code, states = status_json("rabbitmq", env=checkout_env)
    assert code == 0 and states["rabbitmq"]["pid"] not in (None, old_pid)
    assert (tmp_path / "clone" / "services" / "rabbitmq").is_dir()
    run_ok("start", "rabbitmq")  # this checkout's broker again, for the tests after this one


def test_unknown_server_name_is_a_usage_error() -> None:
    result = run_script("start", "postgres")
    assert result.returncode == 2
    assert "unknown server 'postgres'; choose from rabbitmq, cassandra" in result.stderr
