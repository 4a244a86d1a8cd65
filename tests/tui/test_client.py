"""The control client against the real daemon, and against peers that break the protocol."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LiveGateway
from gateway_harness import FENIX, GATEWAY_ID

from tui import (
    ControlClient,
    ControlError,
    DaemonRefusedError,
    DaemonUnavailableError,
    FeedMode,
    GatewayFeed,
)

FENIX_RECORDS = 21


async def test_ping_status_and_device(live_gateway: LiveGateway) -> None:
    client = ControlClient(live_gateway.state_dir / "control.sock")
    try:
        ping = await client.request("ping")
        assert ping["gateway_id"] == GATEWAY_ID and ping["pid"] == live_gateway.gateway.process.pid
        status = await client.request("status")  # a second request on the same connection
        received = {d["device_id"]: d["received"] for d in status["devices"]}
        assert received[FENIX.stem] == FENIX_RECORDS
        device = await client.request("device", {"device_id": FENIX.stem})
        assert [r["seq"] for r in device["recent_records"]] == list(range(FENIX_RECORDS, 1, -1))
    finally:
        await client.close()


async def test_refusal_carries_the_daemons_reason_and_keeps_the_connection(live_gateway: LiveGateway) -> None:
    client = ControlClient(live_gateway.state_dir / "control.sock")
    try:
        with pytest.raises(DaemonRefusedError) as refused:
            await client.request("ack_alarm", {"alarm_id": "no-such-alarm"})
        assert refused.value.op == "ack_alarm"
        assert refused.value.reason == "no raised alarm 'no-such-alarm'"
        assert (await client.request("ping"))["gateway_id"] == GATEWAY_ID
    finally:
        await client.close()


async def test_export_streams_progress_lines(live_gateway: LiveGateway, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    feed = GatewayFeed(live_gateway.state_dir)
    result = await feed.run_action("export", {"path": str(tmp_path / "b.bundle")}, on_progress=lambda d, t: seen.append((d, t)))
    assert seen, "no progress line arrived"
    done, total = seen[-1]
    assert done == total == result["records"] >= FENIX_RECORDS
    assert (tmp_path / "b.bundle").stat().st_size > 0


async def test_no_socket_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(DaemonUnavailableError, match="no control socket at"):
        await ControlClient(tmp_path / "control.sock").request("ping")


async def test_stale_socket_after_a_crash_is_unavailable_then_recovers(live_gateway: LiveGateway) -> None:
    client = ControlClient(live_gateway.state_dir / "control.sock", idle_timeout_s=2.0)
    try:
        await client.request("ping")
        live_gateway.gateway.kill()
        assert (live_gateway.state_dir / "control.sock").exists()  # left behind by SIGKILL
        with pytest.raises(DaemonUnavailableError):
            await client.request("ping")
        with pytest.raises(DaemonUnavailableError, match="cannot connect"):
            await client.request("ping")
        live_gateway.gateway.ports = [live_gateway.streaming.link]
        live_gateway.gateway.start()
        assert (await client.request("ping"))["pid"] == live_gateway.gateway.process.pid
    finally:
        await client.close()


async def test_feed_falls_back_to_the_database_and_says_why(live_gateway: LiveGateway) -> None:
    feed = GatewayFeed(live_gateway.state_dir)
    assert (await feed.fetch_status()).mode is FeedMode.LIVE
    live_gateway.gateway.stop()
    lost = await feed.fetch_status()  # the polling connection sees the daemon go
    assert lost.mode is FeedMode.FALLBACK and lost.problem == "lost the gateway daemon during 'status': Connection lost"
    snapshot = await feed.fetch_status()
    assert snapshot.mode is FeedMode.FALLBACK and snapshot.daemon_down
    assert snapshot.problem.startswith("no control socket at")  # a clean stop removes the socket
    received = {d["device_id"]: d["received"] for d in snapshot.status["devices"]}
    assert received[FENIX.stem] == FENIX_RECORDS
    mode, detail = await feed.fetch_device(FENIX.stem)
    assert mode is FeedMode.FALLBACK and len(detail["recent_records"]) == 20
    await feed.close()


async def test_no_database_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    snapshot = await GatewayFeed(tmp_path).fetch_status()
    assert snapshot.mode is FeedMode.UNAVAILABLE
    assert "no gateway database at" in snapshot.problem


@pytest.fixture
def broken_peer(tmp_path: Path) -> Iterator[tuple[Path, list[bytes]]]:
    """A Unix socket peer that answers each request with the next canned reply, then hangs up."""
    path = tmp_path / "control.sock"
    replies: list[bytes] = []
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        with conn, conn.makefile("rb") as requests:
            for reply in replies:
                requests.readline()
                conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path, replies
    server.close()
    thread.join(timeout=5)


async def test_garbage_from_the_peer_is_a_protocol_error(broken_peer: tuple[Path, list[bytes]]) -> None:
    path, replies = broken_peer
    replies.append(b"this is not json\n")
    client = ControlClient(path, idle_timeout_s=2.0)
    with pytest.raises(ControlError, match="not the control protocol") as error:
        await client.request("ping")
    assert not isinstance(error.value, DaemonUnavailableError)
    assert not client.connected


async def test_progress_then_answer_and_a_peer_that_hangs_up(broken_peer: tuple[Path, list[bytes]]) -> None:
    path, replies = broken_peer
    replies.append(b'{"id": 1, "progress": {"done": 1, "total": 2}}\n{"id": 1, "progress": {"done": 2, "total": 2}}\n'
                   b'{"id": 1, "ok": true, "result": {"path": "/x", "records": 2}}\n')
    client = ControlClient(path, idle_timeout_s=2.0)
    seen: list[tuple[int, int]] = []
    assert await client.request("export", {"path": "/x"}, on_progress=lambda d, t: seen.append((d, t))) == {
        "path": "/x", "records": 2}
    assert seen == [(1, 2), (2, 2)]
    with pytest.raises(DaemonUnavailableError, match="lost the gateway daemon during 'ping'"):
        await client.request("ping")  # the peer has no more replies: it hangs up
