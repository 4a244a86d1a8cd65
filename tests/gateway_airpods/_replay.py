"""A bleak scanner backend that replays recorded AirPods adverts, and the TSV they come from.

The backend stands in for the one thing that cannot exist here, the radio.
It is a real :class:`bleak.backends.scanner.BaseBleakScanner` subclass: bleak's
``BleakScanner(backend=...)`` builds it, and adverts reach the link through
bleak's own ``create_or_update_device`` and ``call_detection_callbacks``.
Failures are the exceptions bleak's BlueZ backend raises for the same events.
"""

from __future__ import annotations

import asyncio
import csv
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.exc import (
    BleakBluetoothNotAvailableError,
    BleakBluetoothNotAvailableReason,
    BleakDBusError,
    BleakError,
)

TSV_PATH = Path(__file__).resolve().parents[1] / "fixtures" / "ble" / "airpods_adverts.tsv"
APPLE = 0x004C
GARMIN = 0x0087  # a non-Apple company id, for background adverts


def load_adverts() -> dict[str, dict[str, str]]:
    """The TSV rows by id."""
    with TSV_PATH.open(newline="", encoding="utf-8") as handle:
        return {row["id"]: row for row in csv.DictReader(handle, delimiter="\t")}


ADVERTS = load_adverts()


def advert_bytes(row_id: str) -> bytes:
    """The manufacturer data (after company id) of a TSV row."""
    return bytes.fromhex(ADVERTS[row_id]["hex"])


@dataclass(frozen=True)
class Advert:
    """One advert on the air: when (seconds after scanning starts), from whom, how strong."""

    at_s: float
    address: str
    rssi_dbm: int
    company_id: int
    payload: bytes


def stream(
    row_id: str, address: str, rssi_dbm: int, *, start_s: float, stop_s: float, every_s: float
) -> list[Advert]:
    """Adverts of one TSV row repeated every ``every_s`` in ``[start_s, stop_s)``."""
    payload = advert_bytes(row_id)
    count = round((stop_s - start_s) / every_s)
    return [Advert(start_s + i * every_s, address, rssi_dbm, APPLE, payload) for i in range(count)]


def background(*, stop_s: float, every_s: float = 0.02) -> list[Advert]:
    """A non-Apple device advertising (a gym is never silent)."""
    count = round(stop_s / every_s)
    return [
        Advert(i * every_s, "C0:FF:EE:00:00:01", -70, GARMIN, b"\x01\x02") for i in range(count)
    ]


@dataclass
class FakeRadio:
    """The air and the adapter the replay backend reads.

    ``script`` is replayed from the start by every scanner that starts.
    Removing the adapter silences running scanners (as BlueZ does), makes
    ``stop()`` fail with the D-Bus error BlueZ returns for a vanished object,
    and makes ``start()`` raise what bleak's BlueZ backend raises.
    """

    script: list[Advert] = field(default_factory=list)
    adapter_present: bool = True
    start_attempts_s: list[float] = field(default_factory=list)
    started_args: list[dict[str, Any]] = field(default_factory=list)
    delivered: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def remove_adapter(self) -> None:
        self.adapter_present = False

    def add_adapter(self) -> None:
        self.adapter_present = True


def replay_backend(radio: FakeRadio) -> type[BaseBleakScanner]:
    """A ``BaseBleakScanner`` subclass bound to ``radio``, for ``BleakScanner(backend=...)``."""

    class ReplayScanner(BaseBleakScanner):
        def __init__(
            self,
            detection_callback: AdvertisementDataCallback | None,
            service_uuids: list[str] | None,
            scanning_mode: str,
            *,
            bluez: dict[str, Any],
            **kwargs: Any,
        ) -> None:
            super().__init__(detection_callback, service_uuids)
            self._mode = scanning_mode
            self._bluez = dict(bluez)
            self._task: asyncio.Task[None] | None = None

        async def start(self) -> None:
            radio.start_attempts_s.append(time.monotonic())
            if not radio.adapter_present:
                adapter = self._bluez.get("adapter")
                if adapter:  # bleak's BlueZManager._check_adapter
                    raise BleakError(f"adapter '{adapter}' not found")
                raise BleakBluetoothNotAvailableError(  # BlueZManager.get_default_adapter
                    "No Bluetooth adapters found.", BleakBluetoothNotAvailableReason.NO_BLUETOOTH
                )
            radio.started_args.append({"mode": self._mode, "bluez": self._bluez})
            self.seen_devices = {}
            self._task = asyncio.get_running_loop().create_task(self._play(list(radio.script)))

        async def stop(self) -> None:
            if self._task is not None:
                self._task.cancel()
                self._task = None
            if not radio.adapter_present:
                raise BleakDBusError(
                    "org.freedesktop.DBus.Error.UnknownObject",
                    [
                        'Method "StopDiscovery" with signature "" on interface '
                        '"org.bluez.Adapter1" doesn\'t exist'
                    ],
                )

        async def _play(self, script: list[Advert]) -> None:
            loop = asyncio.get_running_loop()
            started = loop.time()
            for advert in script:
                await asyncio.sleep(max(0.0, started + advert.at_s - loop.time()))
                if not radio.adapter_present:
                    return  # BlueZ sends nothing more; the scanner is not told
                path = "/org/bluez/hci0/dev_" + advert.address.replace(":", "_")
                data = AdvertisementData(
                    local_name=None,
                    manufacturer_data={advert.company_id: advert.payload},
                    service_data={},
                    service_uuids=[],
                    tx_power=None,
                    rssi=advert.rssi_dbm,
                    platform_data=(path, {}),
                )
                device = self.create_or_update_device(
                    path, advert.address, None, {"path": path}, data
                )
                self.call_detection_callbacks(device, data)
                with radio.lock:
                    radio.delivered += 1

    return ReplayScanner
