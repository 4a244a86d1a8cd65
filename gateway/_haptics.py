"""Haptic cues: CUE frames to a tracker, acknowledged (CUE_ACK) and retried."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from firmware_shim import Cue, FrameType, HapticPattern, encode_frame

__all__ = ["HapticSender", "HapticCue"]

log = logging.getLogger(__name__)

#: Cues remembered for status and the UI; older ones are forgotten. A gym
#: sends a handful a minute, so 200 is hours of history at a few KB.
RECENT_CUES_MAX = 200
_DURATION_MS = {HapticPattern.TAP: 120, HapticPattern.DOUBLE_TAP: 120, HapticPattern.LONG: 800, HapticPattern.ALARM: 300}
_REPEAT = {HapticPattern.TAP: 1, HapticPattern.DOUBLE_TAP: 2, HapticPattern.LONG: 1, HapticPattern.ALARM: 5}


@dataclass
class HapticCue:
    """One cue on its way to a tracker."""

    cue_id: int
    device_id: str
    pattern: HapticPattern
    key: str
    state: str = "sent"  #: sent, acknowledged, failed
    attempts: int = 0
    first_sent_at: float = 0.0
    last_sent_at: float = 0.0

    def as_dict(self) -> dict:
        return {"cue_id": self.cue_id, "device_id": self.device_id, "pattern": self.pattern.name, "key": self.key,
                "state": self.state, "attempts": self.attempts,
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.first_sent_at))}


class HapticSender:
    """Sends CUE frames through a port-writer callback and resends until acknowledged."""

    def __init__(
        self,
        send_to_device: Callable[[str, bytes], bool],
        *,
        retry_interval_s: float = 1.0,
        max_attempts: int = 5,
    ) -> None:
        self._send_to_device = send_to_device
        self._retry_interval_s = retry_interval_s
        self._max_attempts = max_attempts
        self._cues: OrderedDict[int, HapticCue] = OrderedDict()
        self._lock = threading.Lock()
        # Cue ids are the frame's 32-bit seq; starting from the clock keeps
        # ids of a restarted gateway apart from the previous run's.
        self._next_id = int(time.time()) & 0x7FFFFFFF
        self.sent_total = 0
        self.acknowledged_total = 0
        self.failed_total = 0

    def send(self, device_id: str, pattern: HapticPattern, key: str = "") -> HapticCue:
        """Queue a cue for ``device_id`` and send it now."""
        with self._lock:
            self._next_id = (self._next_id + 1) & 0xFFFFFFFF
            cue = HapticCue(self._next_id, device_id, pattern, key, first_sent_at=time.time())
            self._cues[cue.cue_id] = cue
            while len(self._cues) > RECENT_CUES_MAX:
                self._cues.popitem(last=False)
        self.sent_total += 1
        self._transmit(cue)
        return cue

    def _transmit(self, cue: HapticCue) -> None:
        payload = Cue(cue.pattern, _DURATION_MS[cue.pattern], _REPEAT[cue.pattern]).to_payload()
        cue.attempts += 1
        cue.last_sent_at = time.time()
        if not self._send_to_device(cue.device_id, encode_frame(FrameType.CUE, cue.cue_id, payload)):
            log.debug("cue %d: tracker %s not connected now; will retry", cue.cue_id, cue.device_id)

    def on_cue_ack(self, cue_id: int) -> None:
        """The tracker played cue ``cue_id``."""
        with self._lock:
            cue = self._cues.get(cue_id)
        if cue is not None and cue.state == "sent":
            cue.state = "acknowledged"
            self.acknowledged_total += 1
            log.debug("haptic cue %d (%s) acknowledged by %s after %d attempt(s)", cue_id, cue.pattern.name,
                     cue.device_id, cue.attempts)

    def retry_due(self) -> None:
        """Resend cues not acknowledged in time; give up after the last attempt."""
        now = time.time()
        with self._lock:
            pending = [c for c in self._cues.values() if c.state == "sent"]
        for cue in pending:
            if now - cue.last_sent_at < self._retry_interval_s:
                continue
            if cue.attempts >= self._max_attempts:
                cue.state = "failed"
                self.failed_total += 1
                log.warning("haptic cue %d (%s) to %s failed: no acknowledgement after %d attempts", cue.cue_id,
                            cue.pattern.name, cue.device_id, cue.attempts)
                continue
            self._transmit(cue)

    def recent(self, limit: int = 20) -> list[dict]:
        with self._lock:
            cues = list(self._cues.values())[-limit:]
        return [c.as_dict() for c in reversed(cues)]
