"""Signed bundle files: telemetry carried from an offline gateway to central.

A bundle is an Avro object container file (OCF) of telemetry records written
with the latest schema, followed by a fixed-size signature trailer. The byte
layout, the signed digest and the key files are specified in ``BUNDLE.md``
beside this module; this is the reference implementation of both sides:

* the gateway's ``export`` calls :func:`write_bundle` with its signing key;
* ``pulsegate central import`` calls :func:`read_bundle` with the public keys
  it trusts, which checks the whole file before handing out one record.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import stat
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from fastavro import reader as ocf_reader
from fastavro import writer as ocf_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from firmware_shim._records import LATEST_SCHEMA_VERSION, schema, schema_by_fingerprint
from firmware_shim.errors import ShimError

__all__ = [
    "BundleError",
    "BundleMetadata",
    "TRAILER_SIZE",
    "TRAILER_MAGIC",
    "generate_signing_key",
    "load_signing_key",
    "load_public_key",
    "write_public_key",
    "public_key_path",
    "key_id",
    "load_trusted_keys",
    "TrustedKeys",
    "write_bundle",
    "verify_bundle",
    "read_bundle",
]

log = logging.getLogger(__name__)

TRAILER_MAGIC = b"PGBUNDLE"
TRAILER_VERSION = 1
ALGORITHM_ED25519 = 1
#: magic, trailer version, algorithm, key id, signature, OCF length (big-endian).
_TRAILER = struct.Struct(">8sHH16s64sQ")
TRAILER_SIZE = _TRAILER.size  # 100 bytes
#: Prefix of the signed digest: a signature made for anything else never verifies here.
SIGNATURE_DOMAIN = b"pulsegate-bundle-signature-v1\x00"
KEY_ID_BYTES = 16
#: Read and hash in pieces of this size: a month-long bundle never sits in memory.
_CHUNK_BYTES = 1 << 20
#: Call ``progress`` at most once per this many records: often enough for a
#: progress bar, rare enough to cost nothing.
PROGRESS_EVERY_RECORDS = 1000
_OCF_MAGIC = b"Obj\x01"
_META_PREFIX = "pulsegate."
#: Bytes read to name the gateway an untrusted bundle claims to come from: an
#: OCF header (schema and four metadata strings) is a few KiB; the cap keeps a
#: hostile header from making us read a whole file before refusing it.
_HEADER_PEEK_BYTES = 256 * 1024


class BundleError(ShimError):
    """A bundle cannot be written or is refused (unsigned, truncated, altered, unknown key)."""


@dataclass(frozen=True)
class BundleMetadata:
    """What a verified bundle says about itself (all of it covered by the signature)."""

    gateway_id: str
    site: str
    created_at: str
    record_count: int
    key_id: str
    schema_version: int
    ocf_length: int


# --- keys -------------------------------------------------------------------------


def key_id(public_key: Ed25519PublicKey) -> str:
    """The key id: the first 16 bytes of SHA-256 of the raw 32-byte public key, in hex."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).digest()[:KEY_ID_BYTES].hex()


def public_key_path(private_key_path: str | Path) -> Path:
    """Where the public half of a key pair lives: the same name with ``.pub``."""
    return Path(private_key_path).with_suffix(".pub")


def write_public_key(public_key: Ed25519PublicKey, path: str | Path) -> None:
    """Write a public key as PEM (SubjectPublicKeyInfo), e.g. into central's trusted keys."""
    Path(path).write_bytes(
        public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def generate_signing_key(path: str | Path) -> Ed25519PrivateKey:
    """Create a gateway's key pair: private key at ``path`` (mode 0600), public beside it.

    Raises:
        BundleError: ``path`` already exists (a key is never overwritten).
    """
    path = Path(path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise BundleError(
            f"signing key {str(path)!r} already exists; remove it first to make a new one"
        ) from None
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
        out.flush()
        os.fsync(out.fileno())
    write_public_key(key.public_key(), public_key_path(path))
    log.info("new bundle signing key %s in %s", key_id(key.public_key()), path)
    return key


def load_signing_key(path: str | Path) -> Ed25519PrivateKey:
    """Load a gateway's private key, refusing one that others can read.

    Raises:
        BundleError: missing, readable by group or others, or not an Ed25519 PEM key.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read signing key {str(path)!r}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise BundleError(
            f"signing key {str(path)!r} is accessible to others (mode {stat.S_IMODE(mode):04o}); run chmod 600 on it"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise BundleError(
            f"signing key {str(path)!r} is not an unencrypted PEM private key: {exc}"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(
            f"signing key {str(path)!r} is a {type(key).__name__}, not an Ed25519 key"
        )
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """Load a PEM Ed25519 public key.

    Raises:
        BundleError: missing or not an Ed25519 PEM public key.
    """
    path = Path(path)
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise BundleError(f"cannot read public key {str(path)!r}: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise BundleError(f"public key {str(path)!r} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError(f"public key {str(path)!r} is a {type(key).__name__}, not an Ed25519 key")
    return key


class TrustedKeys(dict[str, Ed25519PublicKey]):
    """Public keys central trusts, by gateway id, remembering the folder they came from.

    A plain mapping works wherever this is accepted; the folder only lets a
    refusal name the file that would make a gateway trusted.
    """

    def __init__(self, keys: Mapping[str, Ed25519PublicKey], directory: Path) -> None:
        super().__init__(keys)
        self.directory = directory


def load_trusted_keys(directory: str | Path) -> TrustedKeys:
    """Load every ``<gateway_id>.pub`` of a folder, keyed by gateway id.

    Raises:
        BundleError: the folder is missing, or a key file is unreadable.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise BundleError(
            f"trusted keys folder {str(directory)!r} does not exist; create it and copy each gateway's "
            "<gateway_id>.pub into it"
        )
    keys = {path.stem: load_public_key(path) for path in sorted(directory.glob("*.pub"))}
    return TrustedKeys(keys, directory)


# --- the signed digest ------------------------------------------------------------


def _signed_prefix(key_id_raw: bytes, ocf_length: int) -> bytes:
    return SIGNATURE_DOMAIN + struct.pack(
        ">HH16sQ", TRAILER_VERSION, ALGORITHM_ED25519, key_id_raw, ocf_length
    )


def _trailer(key: Ed25519PrivateKey, digest: bytes, ocf_length: int) -> bytes:
    kid = bytes.fromhex(key_id(key.public_key()))
    return _TRAILER.pack(
        TRAILER_MAGIC, TRAILER_VERSION, ALGORITHM_ED25519, kid, key.sign(digest), ocf_length
    )


# --- writing ----------------------------------------------------------------------


def _counted(
    records: Iterable[dict[str, Any]], counter: list[int], progress: Callable[[int], None] | None
) -> Iterator[dict[str, Any]]:
    for record in records:
        yield record
        counter[0] += 1
        if progress is not None and counter[0] % PROGRESS_EVERY_RECORDS == 0:
            progress(counter[0])


def _ocf_header(metadata: dict[str, str], sync_marker: bytes) -> bytes:
    buf = io.BytesIO()
    ocf_writer(
        buf,
        schema(LATEST_SCHEMA_VERSION).parsed,
        [],
        codec="deflate",
        sync_marker=sync_marker,
        metadata=metadata,
    )
    return buf.getvalue()


def write_bundle(
    path: str | Path,
    records: Iterable[dict[str, Any]],
    *,
    gateway_id: str,
    site: str,
    signing_key: Ed25519PrivateKey,
    progress: Callable[[int], None] | None = None,
) -> BundleMetadata:
    """Write a signed bundle atomically (a temporary file renamed over ``path``).

    Args:
        path: The bundle file to create or replace.
        records: Telemetry records (dicts a v1 or v2 writer accepts; missing v2 fields take defaults).
        gateway_id: The exporting gateway, recorded as ``pulsegate.gateway_id``.
        site: Its site, recorded as ``pulsegate.site``.
        signing_key: The gateway's Ed25519 key (:func:`load_signing_key`).
        progress: Called with the number of records written so far, every
            :data:`PROGRESS_EVERY_RECORDS` records and once at the end.

    Returns:
        The metadata of the written bundle.

    Raises:
        BundleError: a record does not fit the schema, or the file cannot be written.
    """
    path = Path(path)
    body_tmp = path.with_name(f".{path.name}.body.tmp")
    final_tmp = path.with_name(f".{path.name}.tmp")
    meta = {
        f"{_META_PREFIX}gateway_id": gateway_id,
        f"{_META_PREFIX}site": site,
        f"{_META_PREFIX}created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    sync_marker = os.urandom(16)
    counter = [0]
    try:
        # The header must hold the record count, known only at the end: write the
        # blocks to a first file, then the final header and those blocks to a second.
        with open(body_tmp, "wb") as body:
            ocf_writer(
                body,
                schema(LATEST_SCHEMA_VERSION).parsed,
                _counted(records, counter, progress),
                codec="deflate",
                sync_marker=sync_marker,
                metadata=meta,
            )
        meta[f"{_META_PREFIX}record_count"] = str(counter[0])
        header = _ocf_header(meta, sync_marker)
        body_offset = len(
            _ocf_header(
                {k: v for k, v in meta.items() if not k.endswith("record_count")}, sync_marker
            )
        )
        ocf_length = len(header) + body_tmp.stat().st_size - body_offset
        kid = bytes.fromhex(key_id(signing_key.public_key()))
        digest = hashlib.sha256(_signed_prefix(kid, ocf_length))
        with open(final_tmp, "wb") as out, open(body_tmp, "rb") as body:
            out.write(header)
            digest.update(header)
            body.seek(body_offset)
            while chunk := body.read(_CHUNK_BYTES):
                out.write(chunk)
                digest.update(chunk)
            out.write(_trailer(signing_key, digest.digest(), ocf_length))
            out.flush()
            os.fsync(out.fileno())
        os.replace(final_tmp, path)
        _fsync_dir(path.parent)
    except (
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
    ) as exc:  # fastavro's ways of refusing a record
        raise BundleError(
            f"record {counter[0] + 1} cannot be written as telemetry v{LATEST_SCHEMA_VERSION}: {exc}"
        ) from None
    except OSError as exc:
        raise BundleError(f"cannot write bundle {str(path)!r}: {exc.strerror or exc}") from None
    finally:
        body_tmp.unlink(missing_ok=True)
        final_tmp.unlink(missing_ok=True)
    if progress is not None:
        progress(counter[0])
    log.info("bundle %s written: %d records from gateway %s", path, counter[0], gateway_id)
    return BundleMetadata(
        gateway_id,
        site,
        meta[f"{_META_PREFIX}created_at"],
        counter[0],
        kid.hex(),
        LATEST_SCHEMA_VERSION,
        ocf_length,
    )


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- reading ----------------------------------------------------------------------


class _Window(io.RawIOBase):
    """The first ``length`` bytes of a file: the OCF without the trailer."""

    def __init__(self, file: BinaryIO, length: int) -> None:
        self._file = file
        self._left = length
        file.seek(0)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._file.read(min(len(buffer), self._left))
        self._left -= len(data)
        buffer[: len(data)] = data
        return len(data)


def _refuse(path: Path, why: str) -> BundleError:
    return BundleError(f"bundle {str(path)!r} refused: {why}; nothing was imported")


def _check_trailer(path: Path, file: BinaryIO, size: int) -> tuple[bytes, bytes, int]:
    file.seek(0)
    starts_ocf = file.read(4) == _OCF_MAGIC
    if size < TRAILER_SIZE + len(_OCF_MAGIC) or not starts_ocf:
        raise _refuse(path, "it is not a Pulsegate bundle (no Avro container at its start)")
    file.seek(size - TRAILER_SIZE)
    magic, version, algorithm, kid, signature, ocf_length = _TRAILER.unpack(file.read(TRAILER_SIZE))
    if magic != TRAILER_MAGIC:
        file.seek(max(0, size - 2 * TRAILER_SIZE))
        if TRAILER_MAGIC in file.read():
            raise _refuse(path, "it is truncated (the signature trailer is cut short)")
        raise _refuse(path, "it is unsigned or truncated (no signature trailer at its end)")
    if version != TRAILER_VERSION or algorithm != ALGORITHM_ED25519:
        raise _refuse(
            path, f"signature trailer version {version} algorithm {algorithm} is not supported"
        )
    if ocf_length != size - TRAILER_SIZE:
        raise _refuse(
            path,
            f"it is {size} bytes but was signed at {ocf_length + TRAILER_SIZE}: truncated or extended",
        )
    return kid, signature, ocf_length


def _verify_signature(
    path: Path, file: BinaryIO, key: Ed25519PublicKey, kid: bytes, signature: bytes, ocf_length: int
) -> None:
    digest = hashlib.sha256(_signed_prefix(kid, ocf_length))
    file.seek(0)
    left = ocf_length
    while left:
        chunk = file.read(min(_CHUNK_BYTES, left))
        if not chunk:
            raise _refuse(path, "it shrank while being read")
        digest.update(chunk)
        left -= len(chunk)
    try:
        key.verify(signature, digest.digest())
    except InvalidSignature:
        raise _refuse(
            path, "its signature does not match its content: the file was altered or corrupted"
        ) from None


def _metadata(
    path: Path, file: BinaryIO, ocf_length: int, gateway_of_key: str, kid: bytes
) -> BundleMetadata:
    try:
        header = ocf_reader(io.BufferedReader(_Window(file, ocf_length))).metadata
        fp = fingerprint(
            to_parsing_canonical_form(json.loads(header["avro.schema"])), "CRC-64-AVRO"
        )
        gateway_id = header[f"{_META_PREFIX}gateway_id"]
        site = header[f"{_META_PREFIX}site"]
        created_at = header[f"{_META_PREFIX}created_at"]
        count = int(header[f"{_META_PREFIX}record_count"])
    except (KeyError, ValueError, EOFError) as exc:
        raise _refuse(path, f"its header is incomplete ({type(exc).__name__}: {exc})") from None
    info = schema_by_fingerprint(bytes.fromhex(fp))
    if info is None:
        raise _refuse(path, f"its records use an unknown schema (fingerprint {fp})")
    if gateway_id != gateway_of_key:
        raise _refuse(
            path,
            f"it claims gateway {gateway_id!r} but is signed with the key of {gateway_of_key!r}",
        )
    return BundleMetadata(gateway_id, site, created_at, count, kid.hex(), info.version, ocf_length)


def verify_bundle(path: str | Path, trusted_keys: Mapping[str, Ed25519PublicKey]) -> BundleMetadata:
    """Check a whole bundle (trailer, key, signature, header) without decoding records.

    Args:
        path: The bundle file.
        trusted_keys: Public keys central trusts, by gateway id (:func:`load_trusted_keys`).

    Raises:
        BundleError: not a bundle, unsigned, truncated, altered, or signed by a key not trusted.
    """
    path = Path(path)
    try:
        with open(path, "rb") as file:
            return _verify_open(path, file, trusted_keys)
    except OSError as exc:
        raise BundleError(f"cannot read bundle {str(path)!r}: {exc.strerror or exc}") from None


def _verify_open(
    path: Path, file: BinaryIO, trusted_keys: Mapping[str, Ed25519PublicKey]
) -> BundleMetadata:
    size = os.fstat(file.fileno()).st_size
    kid, signature, ocf_length = _check_trailer(path, file, size)
    by_id = {bytes.fromhex(key_id(key)): (gateway, key) for gateway, key in trusted_keys.items()}
    if kid not in by_id:
        raise _refuse(path, _untrusted_why(file, ocf_length, kid, trusted_keys))
    gateway, key = by_id[kid]
    _verify_signature(path, file, key, kid, signature, ocf_length)
    return _metadata(path, file, ocf_length, gateway, kid)


def _claimed_gateway(file: BinaryIO, ocf_length: int) -> str | None:
    """The gateway id the (not yet verified) header names, or None if it cannot be read.

    Only for the message refusing an untrusted bundle: nothing else may rely
    on a header whose signature has not been checked.
    """
    file.seek(0)
    head = file.read(min(ocf_length, _HEADER_PEEK_BYTES))
    try:
        claimed = ocf_reader(io.BytesIO(head)).metadata.get(f"{_META_PREFIX}gateway_id")
    except Exception:  # any unreadable header just means "unknown gateway"
        return None
    if not isinstance(claimed, str) or not claimed.isprintable() or len(claimed) > 128:
        return None  # a hostile header must not put control characters on the terminal
    return claimed


def _untrusted_why(
    file: BinaryIO, ocf_length: int, kid: bytes, trusted_keys: Mapping[str, Ed25519PublicKey]
) -> str:
    """Why a bundle signed by an unknown key is refused, naming its gateway and the key file."""
    gateway = _claimed_gateway(file, ocf_length)
    directory = trusted_keys.directory if isinstance(trusted_keys, TrustedKeys) else None
    name = f"{gateway}.pub" if gateway else "<gateway_id>.pub"
    key_file = str(directory / name) if directory is not None else f"[bundle] trusted_keys_dir/{name}"
    who = f"gateway {gateway!r}" if gateway else "a gateway whose id its header does not give"
    if gateway is not None and gateway in trusted_keys:
        return (
            f"it comes from {who} but its key {kid.hex()} is not trusted ({key_file!r} holds key "
            f"{key_id(trusted_keys[gateway])}); if that gateway has a new key, replace "
            f"{key_file!r} with its 'pulsegate gateway public-key'"
        )
    return (
        f"it comes from {who}, whose key {kid.hex()} is not trusted; if you trust it, save that "
        f"gateway's 'pulsegate gateway public-key' as {key_file!r}"
    )


def read_bundle(
    path: str | Path, trusted_keys: Mapping[str, Ed25519PublicKey]
) -> tuple[BundleMetadata, Iterator[dict[str, Any]]]:
    """Verify a whole bundle, then return its metadata and an iterator of its records.

    The records are resolved to the latest schema. The file stays open until
    the iterator is exhausted or closed. The file is verified once, up front:
    replacing its bytes in place *while* it is being read is not detected.

    Raises:
        BundleError: as :func:`verify_bundle`; the iterator raises it too if the
            record count differs from the signed header.
    """
    path = Path(path)
    try:
        file = open(path, "rb")  # noqa: SIM115 - closed by the record iterator
    except OSError as exc:
        raise BundleError(f"cannot read bundle {str(path)!r}: {exc.strerror or exc}") from None
    try:
        metadata = _verify_open(path, file, trusted_keys)
    except BaseException:
        file.close()
        raise
    return metadata, _records(path, file, metadata)


def _records(path: Path, file: BinaryIO, metadata: BundleMetadata) -> Iterator[dict[str, Any]]:
    count = 0
    try:
        for record in ocf_reader(
            io.BufferedReader(_Window(file, metadata.ocf_length), _CHUNK_BYTES),
            reader_schema=schema(LATEST_SCHEMA_VERSION).parsed,
        ):
            count += 1
            yield record
    except (ValueError, EOFError, IndexError) as exc:
        raise BundleError(
            f"bundle {str(path)!r}: record {count + 1} is unreadable: {exc}"
        ) from None
    finally:
        file.close()
    if count != metadata.record_count:
        raise BundleError(
            f"bundle {str(path)!r} holds {count} records but its header says {metadata.record_count}"
        )
