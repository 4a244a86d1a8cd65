"""Which advertising AirPods are "ours", and whether they are near, in an ear or away.

Pure bookkeeping fed with decoded adverts and times; :class:`AirPodsLink`
calls it from its scanning thread. Nothing here reads a clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.airpods._advert import AirPodsState
from gateway.airpods.settings import AirPodsSettings

__all__ = ["Presence", "PresenceTracker", "Sighting"]

#: Distinct addresses remembered for the strongest-beacon choice. A busy gym
#: may have a few dozen Apple devices in range; only the recent strong ones
#: matter, so the oldest entry is forgotten beyond this.
MAX_CANDIDATE_ADDRESSES = 64


class Presence(enum.StrEnum):
    """Where the configured pair is, as far as its adverts tell."""

    UNSEEN = "unseen"  #: no matching advert since scanning started
    NEAR = "near"  #: advertising in range, no pod in an ear
    IN_EAR = "in_ear"  #: at least one pod in an ear (or the headset worn)
    AWAY = "away"  #: was seen, then silent for ``away_after_s``


@dataclass(frozen=True, slots=True)
class Sighting:
    """The last advert accepted as the pair's."""

    address: str
    rssi_dbm: int
    state: AirPodsState
    seen_s: float


class PresenceTracker:
    """Choose the pair among advertising devices and track its presence with hysteresis.

    Rules: adverts must pass the address and model allow-lists and the RSSI
    floor (relaxed by ``rssi_hysteresis_db`` for the pair already present);
    among the addresses heard in the last ``strongest_window_s`` the strongest
    wins, and the current choice is kept unless another is stronger by more
    than the hysteresis. In-ear changes need ``confirm_adverts`` agreeing
    adverts; "away" needs ``away_after_s`` of silence.
    """

    def __init__(self, settings: AirPodsSettings) -> None:
        self._settings = settings
        self._allowed_addresses = settings.address_set
        self._allowed_models = settings.model_codes
        # address -> (last seen, last RSSI); bounded by MAX_CANDIDATE_ADDRESSES
        self._candidates: dict[str, tuple[float, int]] = {}
        self._chosen: str | None = None
        self.presence = Presence.UNSEEN
        self.last: Sighting | None = None
        self._pending_in_ear: bool | None = None
        self._pending_count = 0

    def reset(self) -> None:
        """Forget every candidate (after a scanner restart); presence is kept until ``tick``."""
        self._candidates.clear()
        self._chosen = None

    def observe(self, address: str, rssi_dbm: int, state: AirPodsState, now_s: float) -> str:
        """Take one decoded advert into account.

        Returns:
            What became of it: ``accepted`` (it is the pair's), ``filtered_address``,
            ``filtered_model``, ``weak`` (below the RSSI floor) or ``other_beacon``
            (a weaker device than the chosen pair).
        """
        address = address.upper()
        if self._allowed_addresses and address not in self._allowed_addresses:
            return "filtered_address"
        if self._allowed_models and state.model.code not in self._allowed_models:
            return "filtered_model"
        floor = self._settings.rssi_floor_dbm
        if address == self._chosen and self.presence in (Presence.NEAR, Presence.IN_EAR):
            floor -= self._settings.rssi_hysteresis_db
        if rssi_dbm < floor:
            return "weak"

        self._remember(address, rssi_dbm, now_s)
        if self._choose(now_s) != address:
            return "other_beacon"
        self.last = Sighting(address, rssi_dbm, state, now_s)
        self._update_presence(state.any_in_ear)
        return "accepted"

    def tick(self, now_s: float) -> Presence:
        """Apply the away timeout; call this periodically.

        Returns:
            The presence after the check.
        """
        last = self.last
        if last is not None and self.presence is not Presence.AWAY:
            if now_s - last.seen_s > self._settings.away_after_s:
                self.presence = Presence.AWAY
                self._pending_in_ear, self._pending_count = None, 0
        return self.presence

    def _remember(self, address: str, rssi_dbm: int, now_s: float) -> None:
        self._candidates.pop(address, None)
        self._candidates[address] = (now_s, rssi_dbm)
        if len(self._candidates) > MAX_CANDIDATE_ADDRESSES:
            # dicts keep insertion order and _remember re-inserts: the first is the stalest
            del self._candidates[next(iter(self._candidates))]

    def _choose(self, now_s: float) -> str | None:
        horizon = now_s - self._settings.strongest_window_s
        recent = {a: rssi for a, (seen, rssi) in self._candidates.items() if seen >= horizon}
        if not recent:
            self._chosen = None
            return None
        best = max(recent, key=lambda a: recent[a])
        current = self._chosen
        # Keep the current choice unless another beacon is clearly stronger,
        # so two pods of similar strength do not take turns.
        if (
            current in recent
            and recent[best] - recent[current] <= self._settings.rssi_hysteresis_db
        ):
            best = current
        self._chosen = best
        return best

    def _update_presence(self, in_ear: bool) -> None:
        if self.presence in (Presence.UNSEEN, Presence.AWAY):
            # A first sighting is believed at once: there is no earlier state to protect.
            self.presence = Presence.IN_EAR if in_ear else Presence.NEAR
            self._pending_in_ear, self._pending_count = None, 0
            return
        if in_ear == (self.presence is Presence.IN_EAR):
            self._pending_in_ear, self._pending_count = None, 0
            return
        if self._pending_in_ear is in_ear:
            self._pending_count += 1
        else:
            self._pending_in_ear, self._pending_count = in_ear, 1
        if self._pending_count >= self._settings.confirm_adverts:
            self.presence = Presence.IN_EAR if in_ear else Presence.NEAR
            self._pending_in_ear, self._pending_count = None, 0
