"""Signed bundles: the format, the keys, and ``pulsegate central import`` into SQLite."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import struct
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.ingest import import_bundle
from central.store._sqlite import SqliteStore
from central_ingest.testdata import make_record, run_cli, write_config
from firmware_shim.bundle_format import (
    TRAILER_SIZE,
    BundleError,
    generate_signing_key,
    key_id,
    load_signing_key,
    load_trusted_keys,
    read_bundle,
    write_bundle,
    write_public_key,
)

BOOT_A, BOOT_B = str(uuid.UUID(int=10)), str(uuid.UUID(int=11))


def _records() -> list[dict]:
    # dev-a loses 301..310 before the export; dev-b rebooted (boot B after boot A).
    return (
        [make_record("dev-a", BOOT_A, s) for s in range(1, 501) if not 301 <= s <= 310]
        + [make_record("dev-b", BOOT_A, s) for s in range(1, 101)]
        + [make_record("dev-b", BOOT_B, s) for s in range(1, 51)]
    )


@pytest.fixture
def keyring(tmp_path: Path) -> tuple[Ed25519PrivateKey, Path]:
    """gw-1's key pair in the gateway's folder, its public key in central's trusted folder."""
    key = generate_signing_key(tmp_path / "gateway" / "bundle-signing.key")
    trusted = tmp_path / "state" / "trusted-keys"
    trusted.mkdir(parents=True)
    write_public_key(key.public_key(), trusted / "gw-1.pub")
    return key, trusted


@pytest.fixture
def bundle(tmp_path: Path, keyring: tuple[Ed25519PrivateKey, Path]) -> Path:
    path = tmp_path / "gw-1.pgbundle"
    seen: list[int] = []
    meta = write_bundle(
        path,
        _records(),
        gateway_id="gw-1",
        site="gym-a",
        signing_key=keyring[0],
        progress=seen.append,
    )
    assert meta.record_count == 640
    assert seen == [640]  # fewer than 1000 records: only the final call
    return path


def test_key_files_private_0600_and_key_id_from_public_key(tmp_path: Path) -> None:
    key = generate_signing_key(tmp_path / "k" / "gw.key")
    assert os.stat(tmp_path / "k" / "gw.key").st_mode & 0o777 == 0o600
    assert load_signing_key(tmp_path / "k" / "gw.key").public_key() == key.public_key()
    raw = key.public_key().public_bytes_raw()
    assert key_id(key.public_key()) == hashlib.sha256(raw).hexdigest()[:32]
    with pytest.raises(BundleError, match="already exists"):
        generate_signing_key(tmp_path / "k" / "gw.key")
    os.chmod(tmp_path / "k" / "gw.key", 0o644)
    with pytest.raises(BundleError, match="chmod 600"):
        load_signing_key(tmp_path / "k" / "gw.key")


def test_round_trip_keeps_every_record_and_the_metadata(
    bundle: Path, keyring: tuple[Ed25519PrivateKey, Path]
) -> None:
    meta, records = read_bundle(bundle, load_trusted_keys(keyring[1]))
    got = list(records)
    assert (meta.gateway_id, meta.site, meta.record_count, meta.schema_version) == (
        "gw-1",
        "gym-a",
        640,
        2,
    )
    assert meta.key_id == key_id(keyring[0].public_key())
    assert [(r["device_id"], str(r["boot_id"]), r["seq"]) for r in got] == [
        (r["device_id"], r["boot_id"], r["seq"]) for r in _records()
    ]
    assert got[0]["rr_intervals_ms"] == [800, 810] and got[0]["sport"] == "running"


def test_trailer_layout_matches_bundle_md(
    bundle: Path, keyring: tuple[Ed25519PrivateKey, Path]
) -> None:
    """Check the signature by hand, from the spec: an independent reader must get the same answer."""
    data = bundle.read_bytes()
    ocf, trailer = data[:-TRAILER_SIZE], data[-TRAILER_SIZE:]
    magic, version, algorithm, kid, signature, length = struct.unpack(">8sHH16s64sQ", trailer)
    assert (magic, version, algorithm, length) == (b"PGBUNDLE", 1, 1, len(ocf))
    signed = b"pulsegate-bundle-signature-v1\x00" + trailer[8:28] + trailer[92:100] + ocf
    keyring[0].public_key().verify(signature, hashlib.sha256(signed).digest())  # raises if wrong
    assert kid.hex() == key_id(keyring[0].public_key())


def _store_rows(state: Path) -> int:
    path = state / "telemetry.sqlite3"
    if not path.exists():
        return 0
    return sqlite3.connect(path).execute("SELECT count(*) FROM telemetry").fetchone()[0]


def test_import_twice_changes_nothing(tmp_path: Path, bundle: Path) -> None:
    config = write_config(tmp_path / "central.toml", tmp_path / "state")
    assert run_cli("central", "db", "init", "--config", str(config)).returncode == 0
    first = run_cli("central", "import", str(bundle), "--config", str(config))
    assert first.returncode == 0, first.stderr
    assert "imported 640 new records (0 already held) from gateway gw-1" in first.stdout
    ledger1 = json.loads(run_cli("central", "ledger", "--json", "--config", str(config)).stdout)
    second = run_cli("central", "import", str(bundle), "--config", str(config))
    assert second.returncode == 0, second.stderr
    ledger2 = json.loads(run_cli("central", "ledger", "--json", "--config", str(config)).stdout)
    assert ledger2 == ledger1
    assert _store_rows(tmp_path / "state") == 640
    by_key = {(d["device_id"], d["boot_id"]): d for d in ledger1["devices"]}
    assert {
        k: (d["records"], d["gaps"], d["first_seq"], d["last_seq"]) for k, d in by_key.items()
    } == {
        ("dev-a", BOOT_A): (490, 10, 1, 500),
        ("dev-b", BOOT_A): (100, 0, 1, 100),
        ("dev-b", BOOT_B): (50, 0, 1, 50),
    }
    assert by_key[("dev-a", BOOT_A)]["missing_ranges"] == [[301, 310]]
    assert by_key[("dev-a", BOOT_A)]["gateway_id"] == "gw-1"


def _mutations(data: bytes) -> dict[str, bytes]:
    ocf_len = len(data) - TRAILER_SIZE
    flipped = bytearray(data)
    flipped[ocf_len // 2] ^= 0x01
    return {
        "truncated-trailer": data[:-7],
        "truncated-body": data[: ocf_len // 2],
        "unsigned": data[:ocf_len],
        "altered": bytes(flipped),
        "appended": data + b"\x00",
    }


@pytest.mark.parametrize(
    "kind", ["truncated-trailer", "truncated-body", "unsigned", "altered", "appended"]
)
def test_damaged_bundles_are_refused_with_nothing_written(
    tmp_path: Path, bundle: Path, kind: str
) -> None:
    damaged = tmp_path / f"{kind}.pgbundle"
    damaged.write_bytes(_mutations(bundle.read_bytes())[kind])
    config = write_config(tmp_path / "central.toml", tmp_path / "state")
    assert run_cli("central", "db", "init", "--config", str(config)).returncode == 0
    done = run_cli("central", "import", str(damaged), "--config", str(config))
    assert done.returncode == 1  # input refused: a runtime failure, not a usage error
    lines = done.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and lines[0].startswith("pulsegate: error: bundle")
        and "nothing was imported" in lines[0]
    )
    assert "Traceback" not in done.stderr
    assert _store_rows(tmp_path / "state") == 0


def test_unknown_key_and_impersonation_are_refused(
    tmp_path: Path, bundle: Path, keyring: tuple[Ed25519PrivateKey, Path]
) -> None:
    store = SqliteStore(tmp_path / "t.sqlite3")
    store.init_schema()
    stranger = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(BundleError, match="not trusted"):
        import_bundle(store, bundle, {"gw-1": stranger})
    # gw-2's key is trusted, but the bundle it signed claims to come from gw-1.
    forged = tmp_path / "forged.pgbundle"
    gw2 = Ed25519PrivateKey.generate()
    write_bundle(forged, _records()[:5], gateway_id="gw-1", site="gym-a", signing_key=gw2)
    with pytest.raises(
        BundleError, match="claims gateway 'gw-1' but is signed with the key of 'gw-2'"
    ):
        import_bundle(store, forged, {"gw-2": gw2.public_key()})
    assert store.ledger() == []


def test_bundle_with_an_implausible_record_is_refused_whole(
    tmp_path: Path, keyring: tuple[Ed25519PrivateKey, Path]
) -> None:
    records = _records()
    records[600] = make_record("dev-b", BOOT_A, 91, heart_rate_bpm=900)
    path = tmp_path / "bad.pgbundle"
    write_bundle(path, records, gateway_id="gw-1", site="gym-a", signing_key=keyring[0])
    store = SqliteStore(tmp_path / "t.sqlite3")
    store.init_schema()
    with pytest.raises(Exception, match="heart_rate_bpm 900") as caught:
        import_bundle(store, path, load_trusted_keys(keyring[1]), chunk_records=100)
    assert "nothing was imported" in str(caught.value)
    assert store.ledger() == []


def test_write_bundle_is_atomic_when_a_record_is_bad(
    tmp_path: Path, keyring: tuple[Ed25519PrivateKey, Path]
) -> None:
    path = tmp_path / "out.pgbundle"
    path.write_bytes(b"previous export")
    records = [make_record("dev", BOOT_A, 1), {"device_id": "dev", "seq": "two"}]
    with pytest.raises(BundleError, match="record 2 cannot be written"):
        write_bundle(path, records, gateway_id="gw-1", site="gym-a", signing_key=keyring[0])
    assert path.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gateway", "out.pgbundle", "state"]


def test_progress_is_reported_every_thousand_records(
    tmp_path: Path, keyring: tuple[Ed25519PrivateKey, Path]
) -> None:
    seen: list[int] = []
    records = (make_record("dev", BOOT_A, s) for s in range(1, 2501))
    write_bundle(
        tmp_path / "p.pgbundle",
        records,
        gateway_id="gw-1",
        site="gym-a",
        signing_key=keyring[0],
        progress=seen.append,
    )
    assert seen == [1000, 2000, 2500]
