"""Test data for central ingest, and the real servers' helpers.

Records are built with the wire contract's own encoder (``encode_record``,
``split_soe``, ``build_message``), exactly as a gateway builds a message.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from firmware_shim import encode_record, split_soe
from firmware_shim.uplink_format import CONTENT_TYPE, FORMAT, build_message

REPO = Path(__file__).resolve().parents[2]
#: The installed console script, run as a real subprocess.
PULSEGATE = [str(Path(sys.executable).parent / "pulsegate")]
#: 2025-03-01T00:00:00Z, a plausible sample time.
T0_US = 1_740_787_200_000_000


def make_record(device_id: str, boot_id: str, seq: int, **fields: Any) -> dict[str, Any]:
    """A plausible v2-shaped record; ``fields`` override or add values."""
    record: dict[str, Any] = {
        "device_id": device_id,
        "boot_id": boot_id,
        "seq": seq,
        "timestamp_us": T0_US + seq * 1_000_000,
        "heart_rate_bpm": 60 + seq % 100,
        "cadence_rpm": None,
        "speed_m_s": 2.5,
        "distance_m": float(seq * 3),
        "latitude_deg": 47.5,
        "longitude_deg": 8.5,
        "altitude_m": 400.0,
        "power_w": 200,
        "temperature_c": 21.5,
        "steps": seq * 2,
        "battery_pct": 80,
        "host": {"uptime_s": 1000 + seq, "cpu_load": 0.25, "free_memory_bytes": 1 << 20},
        "rr_intervals_ms": [800, 810],
        "respiration_rate_bpm": 14.0,
        "sport": "running",
    }
    record.update(fields)
    return record


def message_body(records: Iterable[dict[str, Any]], version: int = 2) -> bytes:
    """An uplink message body: the records encoded by a ``version`` writer, as one OCF block."""
    info = None
    datums = []
    for record in records:
        info, datum = split_soe(encode_record(record, version))
        datums.append(datum)
    assert info is not None, "a message needs at least one record"
    return build_message(info, datums)


def message_headers(count: int, gateway_id: str = "gw-1", site: str = "gym-a") -> dict[str, Any]:
    return {
        "pulsegate-format": FORMAT,
        "gateway-id": gateway_id,
        "site": site,
        "record-count": count,
    }


def publish(
    url: str,
    messages: Iterable[tuple[bytes, dict[str, Any]]],
    routing_key: str = "telemetry.gym-a.gw-1",
) -> int:
    """Publish with confirms to the telemetry exchange; return how many were published."""
    import pika

    from firmware_shim.amqp_topology import EXCHANGE, declare_topology

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        declare_topology(channel)
        channel.confirm_delivery()
        sent = 0
        for body, headers in messages:
            channel.basic_publish(
                EXCHANGE,
                routing_key,
                body,
                pika.BasicProperties(
                    content_type=CONTENT_TYPE,
                    delivery_mode=2,
                    headers=headers,
                    message_id=f"test:{sent}",
                ),
                mandatory=True,
            )
            sent += 1
        return sent
    finally:
        connection.close()


def write_config(path: Path, state_dir: Path, **sections: dict[str, Any]) -> Path:
    """Write a central TOML config with ``[central] state_dir`` and the given sections."""
    lines = ["[central]", f'state_dir = "{state_dir}"']
    for name, values in sections.items():
        lines.append(f"[{name}]")
        for key, value in values.items():
            if isinstance(value, str):
                lines.append(f'{key} = "{value}"')
            elif isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, list):
                lines.append(f"{key} = [{', '.join(repr(v) for v in value)}]".replace("'", '"'))
            else:
                lines.append(f"{key} = {value}")
    path.write_text("\n".join(lines) + "\n")
    return path


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PULSEGATE, *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )


