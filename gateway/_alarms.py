"""Local alarms: what field staff at the gateway must look at, with hysteresis-free
clear rules (an alarm clears when its condition is gone) and acknowledgement."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

__all__ = ["LocalAlarms", "Alarm"]

log = logging.getLogger(__name__)


@dataclass
class Alarm:
    """One raised alarm; its id is ``kind:subject``."""

    kind: str
    subject: str
    message: str
    raised_at: float = field(default_factory=time.time)
    acknowledged: bool = False

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.subject}"

    def as_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "subject": self.subject, "message": self.message,
                "raised_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.raised_at)),
                "acknowledged": self.acknowledged}


class LocalAlarms:
    """The set of raised alarms; conditions are re-evaluated by the daemon."""

    def __init__(self, gateway_id: str) -> None:
        self._gateway_id = gateway_id
        self._alarms: dict[str, Alarm] = {}
        self._lock = threading.Lock()

    def update(self, active: list[Alarm]) -> None:
        """Make ``active`` the raised set: new ones are raised, missing ones cleared."""
        with self._lock:
            wanted = {a.id: a for a in active}
            for alarm_id in list(self._alarms):
                if alarm_id not in wanted:
                    log.info("gateway %s: alarm cleared: %s", self._gateway_id, alarm_id)
                    del self._alarms[alarm_id]
            for alarm_id, alarm in wanted.items():
                current = self._alarms.get(alarm_id)
                if current is None:
                    log.warning("gateway %s: alarm raised: %s: %s", self._gateway_id, alarm_id, alarm.message)
                    self._alarms[alarm_id] = alarm
                else:
                    current.message = alarm.message

    def acknowledge(self, alarm_id: str) -> bool:
        with self._lock:
            alarm = self._alarms.get(alarm_id)
            if alarm is None:
                return False
            alarm.acknowledged = True
        log.info("gateway %s: alarm acknowledged: %s", self._gateway_id, alarm_id)
        return True

    def as_list(self) -> list[dict]:
        with self._lock:
            return [a.as_dict() for a in sorted(self._alarms.values(), key=lambda a: a.raised_at)]
