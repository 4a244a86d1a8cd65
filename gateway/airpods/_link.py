"""The AirPods link: a bleak scanner on its own asyncio loop in a background thread.

The gateway daemon is threaded; this class gives it a blocking, thread-safe
face (``start``, ``stop``, ``rescan``, ``status``, ``voice_allowed``) and
keeps every bleak call on one private event loop.

Recovery: BlueZ does not tell a running scanner that its adapter went away;
adverts simply stop. So besides restarting after a failed ``start()`` (with
exponential backoff), the link restarts scanning when no advert of any kind
has arrived for ``scan_watchdog_s``; if the adapter is gone, that restart
fails and the backoff takes over.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal

from bleak import BleakScanner
from bleak.args.bluez import BlueZScannerArgs, OrPattern
from bleak.assigned_numbers import AdvertisementDataType
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.exc import BleakBluetoothNotAvailableError, BleakError
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from gateway.airpods._advert import (
    APPLE_COMPANY_ID,
    PROXIMITY_PAIRING_TYPE,
    AdvertError,
    parse_proximity_pairing,
)
from gateway.airpods._presence import Presence, PresenceTracker
from gateway.airpods.settings import AirPodsSettings

__all__ = ["AirPodsLink", "LinkState"]

logger = logging.getLogger(__name__)

#: BlueZ passive scanning delivers only adverts matching a pattern: Apple's
#: company id (little-endian on air) followed by the proximity-pairing type.
_PASSIVE_PATTERN = OrPattern(0, AdvertisementDataType.MANUFACTURER_SPECIFIC_DATA, b"\x4c\x00\x07")


class LinkState(enum.StrEnum):
    """The link's state as the status JSON and the TUI show it."""

    DISABLED = "disabled"  #: [airpods] enabled = false
    STOPPED = "stopped"  #: not started, or stopped
    STARTING = "starting"  #: first scanner start in progress
    NO_ADAPTER = "no_adapter"  #: no usable Bluetooth adapter; retrying with backoff
    SEARCHING = "searching"  #: scanning, the pair has not been seen
    NEAR = "near"  #: the pair advertises nearby, no pod in an ear
    IN_EAR = "in_ear"  #: at least one pod in an ear
    AWAY = "away"  #: the pair was seen, then went silent


_PRESENCE_TO_STATE = {
    Presence.UNSEEN: LinkState.SEARCHING,
    Presence.NEAR: LinkState.NEAR,
    Presence.IN_EAR: LinkState.IN_EAR,
    Presence.AWAY: LinkState.AWAY,
}


class _LinkMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.state = Gauge(
            "pulsegate_gateway_airpods_link_state",
            "1 for the AirPods link's current state, 0 for the others.",
            ["state"],
            registry=registry,
        )
        self.battery = Gauge(
            "pulsegate_gateway_airpods_battery_ratio",
            "Battery level the AirPods advertise (NaN: no data).",
            ["part"],
            registry=registry,
        )
        self.rssi = Gauge(
            "pulsegate_gateway_airpods_rssi_dbm",
            "Signal strength of the last advert accepted from the pair.",
            registry=registry,
        )
        self.last_advert = Gauge(
            "pulsegate_gateway_airpods_last_advert_timestamp_seconds",
            "Unix time of the last advert accepted from the pair.",
            registry=registry,
        )
        self.adverts = Counter(
            "pulsegate_gateway_airpods_adverts",
            "AirPods adverts by what became of them.",
            ["outcome"],
            registry=registry,
        )
        self.restarts = Counter(
            "pulsegate_gateway_airpods_scanner_restarts",
            "Bluetooth scanner restarts by cause.",
            ["reason"],
            registry=registry,
        )
        for part in ("left", "right", "case", "single"):
            self.battery.labels(part).set(math.nan)


class AirPodsLink:
    """Scan for the configured AirPods and track their presence and battery.

    Args:
        settings: The [airpods] section.
        backend: A bleak scanner backend class; ``None`` picks the platform's
            (BlueZ on Linux). Tests pass a replaying backend.
        clock: Monotonic seconds; injectable for tests.
        registry: Where the metrics are registered (default: the global registry).
    """

    def __init__(
        self,
        settings: AirPodsSettings,
        *,
        backend: type[BaseBleakScanner] | None = None,
        clock: Callable[[], float] = time.monotonic,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._settings = settings
        self._backend = backend
        self._clock = clock
        self._metrics = _LinkMetrics(REGISTRY if registry is None else registry)
        self._tracker = PresenceTracker(settings)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._state = LinkState.DISABLED if not settings.enabled else LinkState.STOPPED
        self._set_state_metric(self._state)
        self._last_error: str | None = None
        self._restarts = 0
        self._last_any_advert_s = 0.0
        self._ever_scanned = False
        # advert rejection reasons already logged at INFO; later ones go to DEBUG.
        # Bounded by the handful of AdvertError reasons.
        self._logged_rejections: set[str] = set()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._rescan_requested = False

    # -- the gateway's side (any thread) ---------------------------------

    @property
    def state(self) -> LinkState:
        """The current link state."""
        with self._lock:
            return self._state

    def start(self) -> None:
        """Start scanning in a background thread; returns at once.

        Without an adapter the link logs one line, reports ``no_adapter`` and
        keeps retrying; the caller never sees an exception for that.
        """
        if not self._settings.enabled:
            logger.info("AirPods link disabled by [airpods] enabled = false")
            return
        if self._thread is not None:
            return
        ready = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(
            target=self._thread_main, args=(ready,), name="airpods-link", daemon=True
        )
        self._set_state(LinkState.STARTING)
        self._thread.start()
        ready.wait()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop scanning and join the thread.

        Args:
            timeout_s: Longest wait for the scanner to stop.
        """
        thread = self._thread
        if thread is None:
            return
        self._stopping = True
        self._wake_loop()
        thread.join(timeout_s)
        if thread.is_alive():
            logger.warning(
                "AirPods link thread did not stop within %.1f s; leaving it as a daemon thread",
                timeout_s,
            )
        self._thread = None
        self._set_state(LinkState.STOPPED)

    def rescan(self) -> None:
        """Restart scanning now (the TUI's "rescan Bluetooth"), also cutting a backoff wait short."""
        self._rescan_requested = True
        self._wake_loop()

    def voice_allowed(self) -> bool:
        """True when a voice cue would reach an ear.

        That is: a pod is in an ear, or the pair is near and its model does not
        report in-ear state at all (Beats Flex).
        """
        with self._lock:
            if self._state is LinkState.IN_EAR:
                return True
            last = self._tracker.last
            return (
                self._state is LinkState.NEAR
                and last is not None
                and not last.state.model.reports_in_ear
            )

    def wait_for_state(self, states: Iterable[LinkState], timeout_s: float) -> bool:
        """Block until the link is in one of ``states``.

        Returns:
            True if it got there within ``timeout_s``.
        """
        wanted = frozenset(states)
        with self._changed:
            return self._changed.wait_for(lambda: self._state in wanted, timeout_s)

    def status(self) -> dict[str, Any]:
        """The ``airpods`` key of the gateway's status JSON (without cue counts).

        Returns:
            A JSON-ready dict: state, address, rssi_dbm, model, battery_pct,
            charging, in_ear, last_advert_age_s, scanner_restarts, last_error.
        """
        with self._lock:
            last = self._tracker.last
            status: dict[str, Any] = {
                "state": str(self._state),
                "adapter": self._settings.adapter or "default",
                "scanner_restarts": self._restarts,
                "last_error": self._last_error,
                "address": None,
                "rssi_dbm": None,
                "model": None,
                "battery_pct": None,
                "charging": None,
                "in_ear": None,
                "last_advert_age_s": None,
            }
            if last is None:
                return status
            pods = last.state
            status.update(
                address=last.address,
                rssi_dbm=last.rssi_dbm,
                model={"code": f"0x{pods.model.code:04X}", "name": pods.model.name},
                battery_pct={
                    "left": pods.left_pct,
                    "right": pods.right_pct,
                    "case": pods.case_pct,
                    "single": pods.single_pct,
                },
                charging={
                    "left": pods.left_charging,
                    "right": pods.right_charging,
                    "case": pods.case_charging,
                    "single": pods.single_charging,
                },
                in_ear={"left": pods.left_in_ear, "right": pods.right_in_ear},
                last_advert_age_s=round(max(0.0, self._clock() - last.seen_s), 3),
            )
            return status

    # -- the loop thread ---------------------------------------------------

    def _wake_loop(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # the loop closed between the check and the call
                pass

    def _thread_main(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._wake = asyncio.Event()
            ready.set()
            loop.run_until_complete(self._async_run())
        except Exception:  # the thread must not die silently: the gateway would think the link idle
            logger.exception(
                "AirPods link thread failed; the link stays down until the gateway restarts it"
            )
        finally:
            ready.set()
            loop.close()
            self._loop = None

    async def _async_run(self) -> None:
        delay_s = self._settings.retry_initial_s
        while not self._stopping:
            scanner = await self._async_start_scanner(delay_s)
            if scanner is None:
                if await self._async_wait(delay_s) == "rescan":
                    delay_s = self._settings.retry_initial_s
                else:
                    delay_s = min(delay_s * 2, self._settings.retry_max_s)
                continue

            delay_s = self._settings.retry_initial_s
            reason = await self._async_supervise()
            await self._async_stop_scanner(scanner)
            if reason != "stop":
                self._restarts += 1
                self._metrics.restarts.labels(reason).inc()
                # A watchdog restart is routine in a quiet room; a lost adapter is logged
                # when the restart fails.
                level = logging.INFO if reason == "rescan" else logging.DEBUG
                logger.log(level, "Restarting Bluetooth scan for AirPods (%s)", reason)

    def _make_scanner(self) -> BleakScanner:
        bluez: BlueZScannerArgs = {}
        if self._settings.adapter:
            bluez["adapter"] = self._settings.adapter
        if self._settings.scanning_mode == "passive":
            bluez["or_patterns"] = [_PASSIVE_PATTERN]
        mode: Literal["active", "passive"] = (
            "passive" if self._settings.scanning_mode == "passive" else "active"
        )
        return BleakScanner(self._on_advert, None, mode, bluez=bluez, backend=self._backend)

    async def _async_start_scanner(self, delay_s: float) -> BleakScanner | None:
        try:
            scanner = self._make_scanner()  # bleak raises BleakError here on unsupported platforms
            await scanner.start()
        except (BleakError, OSError) as exc:
            self._note_start_failure(exc, delay_s)
            return None
        # An unknown failure must not end the link: log it, back off, retry.
        except Exception as exc:
            logger.exception(
                "Unexpected error starting the Bluetooth scanner; retrying in %.1f s", delay_s
            )
            self._note_start_failure(exc, delay_s, logged=True)
            return None

        with self._lock:
            self._tracker.reset()
            self._last_any_advert_s = self._clock()
            self._last_error = None
            recovered = self._state is LinkState.NO_ADAPTER
            presence = self._tracker.tick(self._clock())
            self._set_state_locked(_PRESENCE_TO_STATE[presence])
        if recovered or not self._ever_scanned:
            logger.info(
                "Scanning for AirPods on Bluetooth adapter %s (%s mode)",
                self._settings.adapter or "default",
                self._settings.scanning_mode,
            )
        self._ever_scanned = True
        return scanner

    def _note_start_failure(
        self, exc: BaseException, delay_s: float, *, logged: bool = False
    ) -> None:
        detail = _describe_start_error(exc)
        # Log before the state changes, so whoever waits for no_adapter finds the line.
        first = self.state is not LinkState.NO_ADAPTER  # only this thread sets no_adapter
        self._log_start_failure(detail, delay_s, first=first, logged=logged)
        with self._lock:
            self._last_error = detail
            self._set_state_locked(LinkState.NO_ADAPTER)

    def _log_start_failure(self, detail: str, delay_s: float, *, first: bool, logged: bool) -> None:
        if logged:
            return
        if first and not self._ever_scanned:
            logger.warning(
                "No usable Bluetooth adapter for the AirPods link (%s); voice cues are off, "
                "the gateway runs on and retries in the background (see gateway/airpods/PAIRING.md)",
                detail,
            )
        elif first:
            logger.warning(
                "Bluetooth adapter lost (%s); retrying with backoff up to %.0f s",
                detail,
                self._settings.retry_max_s,
            )
        else:
            logger.debug(
                "Bluetooth scanner still unavailable (%s); next try in %.1f s", detail, delay_s
            )

    async def _async_stop_scanner(self, scanner: BleakScanner) -> None:
        try:
            await scanner.stop()
        except (BleakError, OSError) as exc:
            # Expected when the adapter vanished: BlueZ has no object to stop.
            logger.debug("Stopping the Bluetooth scanner failed: %s", exc)

    async def _async_wait(self, delay_s: float) -> str:
        """Sleep up to ``delay_s``; return early with "stop" or "rescan" when asked."""
        assert self._wake is not None
        try:
            await asyncio.wait_for(self._wake.wait(), delay_s)
        except TimeoutError:
            pass
        self._wake.clear()
        if self._stopping:
            return "stop"
        if self._rescan_requested:
            self._rescan_requested = False
            return "rescan"
        return "timeout"

    async def _async_supervise(self) -> str:
        while True:
            woke = await self._async_wait(self._settings.poll_interval_s)
            if woke != "timeout":
                return woke
            now = self._clock()
            with self._lock:
                self._evaluate_locked(now)
                silent_s = now - self._last_any_advert_s
            if silent_s > self._settings.scan_watchdog_s:
                return "watchdog"

    def _on_advert(self, device: BLEDevice, adv: AdvertisementData) -> None:
        # Runs on the loop thread for every advert of every device in range:
        # only DEBUG logging and counters here.
        now = self._clock()
        self._last_any_advert_s = now
        data = adv.manufacturer_data.get(APPLE_COMPANY_ID)
        if not data or data[0] != PROXIMITY_PAIRING_TYPE:
            return  # phones, watches and other vendors
        try:
            pods = parse_proximity_pairing(data)
        except AdvertError as exc:
            self._metrics.adverts.labels(f"rejected_{exc.reason}").inc()
            level = logging.DEBUG if exc.reason in self._logged_rejections else logging.INFO
            self._logged_rejections.add(exc.reason)
            logger.log(level, "Ignoring advert from %s: %s", device.address, exc)
            return
        with self._lock:
            outcome = self._tracker.observe(device.address, adv.rssi, pods, now)
            if outcome == "accepted":
                self._record_sighting(adv.rssi)
            self._evaluate_locked(now)
        self._metrics.adverts.labels(outcome).inc()

    def _record_sighting(self, rssi_dbm: int) -> None:
        last = self._tracker.last
        assert last is not None
        pods = last.state
        for part, pct in (
            ("left", pods.left_pct),
            ("right", pods.right_pct),
            ("case", pods.case_pct),
            ("single", pods.single_pct),
        ):
            self._metrics.battery.labels(part).set(math.nan if pct is None else pct / 100)
        self._metrics.rssi.set(rssi_dbm)
        self._metrics.last_advert.set(time.time())

    def _evaluate_locked(self, now_s: float) -> None:
        if (
            self._state in (LinkState.NO_ADAPTER, LinkState.STOPPED, LinkState.DISABLED)
            or self._stopping
        ):
            return
        self._set_state_locked(_PRESENCE_TO_STATE[self._tracker.tick(now_s)])

    def _set_state(self, state: LinkState) -> None:
        with self._lock:
            self._set_state_locked(state)

    def _set_state_locked(self, state: LinkState) -> None:
        previous, self._state = self._state, state
        if previous is state:
            return
        self._set_state_metric(state)
        self._changed.notify_all()
        if state in (LinkState.NEAR, LinkState.IN_EAR, LinkState.AWAY):
            last = self._tracker.last
            logger.info(
                "AirPods %s: %s (%s, %s dBm)",
                state,
                last.state.model.name if last else "?",
                last.address if last else "?",
                last.rssi_dbm if last else "?",
            )

    def _set_state_metric(self, state: LinkState) -> None:
        for each in LinkState:
            self._metrics.state.labels(str(each)).set(1 if each is state else 0)


def _describe_start_error(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, BleakError):
        # bleak's BlueZ backend connects to the D-Bus system bus first; a
        # missing socket means no dbus-daemon or no bluetoothd on this host.
        return f"D-Bus system bus not reachable ({exc.strerror or exc}); is bluetoothd running?"
    if isinstance(exc, BleakBluetoothNotAvailableError):
        return str(exc.args[0])  # str() of this error is its (message, reason) tuple
    return str(exc) or type(exc).__name__
