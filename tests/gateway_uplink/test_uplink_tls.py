"""TLS with a client certificate, against a real TLS listener on loopback.

The development broker has no TLS listener, so the peer here is Python's ssl
server: it completes the handshake (requiring the gateway's certificate), reads
the AMQP protocol header the uplink sends first, and hangs up.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from gateway.uplink import Uplink, UplinkSettings
from gateway_uplink.outbox_files import OutboxFile
from gateway_uplink.uplink_harness import wait_for

AMQP_0_9_1_HEADER = b"AMQP\x00\x00\x09\x01"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _issue(name: str, cn: str, ca: str, cwd: Path, san: str | None = None) -> None:
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=cwd)
    extra = []
    if san:
        (cwd / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        extra = ["-extfile", f"{name}.ext"]
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", *extra, cwd=cwd)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1, a gateway certificate, and an unrelated CA."""
    cwd = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2", "-subj", f"/CN=test {ca}", cwd=cwd)
    _issue("server", "broker.test", "ca", cwd, san="IP:127.0.0.1,DNS:broker.test")
    _issue("gateway", "gw-tls", "ca", cwd)
    return cwd


class TlsPeer:
    """Accepts one TLS connection that must present a certificate from ``ca.pem``."""

    def __init__(self, pki: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(pki / "server.pem", pki / "server.key")
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.context.load_verify_locations(pki / "ca.pem")
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.first_bytes = b""
        self.client_cn: str | None = None
        self.handshake_error: str | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(30)
        raw, _ = self.listener.accept()
        try:
            with self.context.wrap_socket(raw, server_side=True) as tls:
                self.client_cn = dict(x[0] for x in tls.getpeercert()["subject"])["commonName"]
                tls.settimeout(10)
                while len(self.first_bytes) < len(AMQP_0_9_1_HEADER):
                    self.first_bytes += tls.recv(8)
        except (ssl.SSLError, OSError) as exc:
            self.handshake_error = str(exc)
        finally:
            raw.close()
            self.listener.close()


def _uplink(outbox: OutboxFile, pki: Path, port: int, ca: str) -> Uplink:
    settings = UplinkSettings(
        amqp_url=f"amqps://127.0.0.1:{port}/", tls_ca_file=pki / f"{ca}.pem",
        tls_cert_file=pki / "gateway.pem", tls_key_file=pki / "gateway.key",
        backoff_min_s=5.0, backoff_max_s=10.0,
    )
    return Uplink(settings, outbox_path=outbox.path, gateway_id="gw-tls", site="s", registry=CollectorRegistry())


def test_uplink_speaks_amqp_over_tls_with_its_client_certificate(outbox: OutboxFile, pki: Path) -> None:
    peer = TlsPeer(pki)
    uplink = _uplink(outbox, pki, peer.port, "ca")
    uplink.start()
    try:
        peer.thread.join(30)
        wait_for(lambda: uplink.status()["state"] == "down", what="the uplink to see the hang-up")
    finally:
        uplink.stop()
    assert peer.handshake_error is None
    assert peer.client_cn == "gw-tls"
    assert peer.first_bytes == AMQP_0_9_1_HEADER
    assert uplink.status()["broker"] == f"amqps://127.0.0.1:{peer.port}/%2F"


def test_a_broker_certificate_from_another_ca_is_refused(outbox: OutboxFile, pki: Path) -> None:
    peer = TlsPeer(pki)
    uplink = _uplink(outbox, pki, peer.port, "other-ca")
    uplink.start()
    try:
        wait_for(lambda: uplink.status()["state"] == "down", what="the failed handshake")
        status = uplink.status()
    finally:
        uplink.stop()
    assert "certificate verify failed" in status["last_error"].lower()
    assert peer.first_bytes == b"", "nothing may be sent to an unverified broker"
