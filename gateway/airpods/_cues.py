"""The cue policy: which cues reach the wearer, on which channel, and when.

A :class:`Cue` may carry a voice text (spoken in the AirPods) and a haptic
pattern (played by a tracker; the gateway sends the CUE frame through the
``haptic_sink`` callback). :meth:`CueDispatcher.submit` applies, in order:

1. de-duplication by key within ``dedupe_window_s`` (whole cue);
2. quiet hours, which silence every cue but alarms (whole cue);
3. the haptic part goes to the sink at once;
4. the voice part needs a voice output, a pod in an ear (``voice_gate``) and
   room under the per-minute rate limit (alarms have their own cap), then
   waits in a priority queue for the speaking thread, which checks the ear
   gate and the cue's age again before it speaks.

Every part that does not go out is counted with its reason.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from datetime import time as clock_time
from typing import Any, Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from firmware_shim import HapticPattern
from gateway.airpods._errors import AirPodsError, VoiceError
from gateway.airpods._voice import VoiceOutput
from gateway.airpods.settings import CueSettings

__all__ = ["Cue", "CueDispatcher", "CueError", "CueOutcome", "CuePriority", "HapticSink"]

logger = logging.getLogger(__name__)

#: Voice cues waiting to be spoken. At two to three seconds a cue this is
#: most of a minute of speech; anything queued behind it would be stale.
MAX_QUEUED_VOICE_CUES = 16
#: Cue keys remembered for de-duplication. Tens of trackers emit a few keys
#: per window each; beyond this the oldest key is forgotten early.
MAX_DEDUPE_KEYS = 512
_RATE_WINDOW_S = 60.0


class CueError(AirPodsError):
    """A cue is malformed (no key, or nothing to say or play)."""


class CuePriority(enum.IntEnum):
    """Cue urgency; a lower value is spoken first."""

    ALARM = 0  #: stop and check: passes quiet hours, has its own rate cap
    HEALTH = 1  #: system or body health worth hearing soon
    MILESTONE = 2  #: distance, duration, heart-rate zone
    INFO = 3  #: test cues and the like


class HapticSink(Protocol):
    """The gateway's callback that sends a CUE frame to a tracker."""

    def __call__(self, device_id: str, pattern: HapticPattern, cue_key: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Cue:
    """One cue for the wearer.

    Attributes:
        key: Identity for de-duplication, e.g. ``"tracker-7:distance:5"``.
        priority: Urgency.
        voice_text: What to say in the AirPods, or ``None``.
        haptic: Pattern for the tracker to play, or ``None``.
        device_id: The tracker that plays the haptic part.
    """

    key: str
    priority: CuePriority
    voice_text: str | None = None
    haptic: HapticPattern | None = None
    device_id: str | None = None

    def __post_init__(self) -> None:
        if not self.key:
            raise CueError("a cue needs a non-empty key for de-duplication")
        if not self.voice_text and self.haptic is None:
            raise CueError(f"cue {self.key!r} has neither voice text nor a haptic pattern")


@dataclass(frozen=True, slots=True)
class CueOutcome:
    """What :meth:`CueDispatcher.submit` did with each part of a cue.

    Each field is ``"none"`` (the cue had no such part), ``"queued"`` (voice,
    waiting to be spoken), ``"sent"`` (haptic, handed to the sink) or a drop reason.
    """

    voice: str
    haptic: str


@dataclass(order=True)
class _Queued:
    priority: int
    order: int
    enqueued_s: float
    cue: Cue


class _CueMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.cues = Counter(
            "pulsegate_gateway_cues",
            "Cue parts by channel (voice, haptic) and outcome (sent, or the reason they were dropped).",
            ["channel", "outcome"],
            registry=registry,
        )
        self.queued = Gauge(
            "pulsegate_gateway_cue_queue_length",
            "Voice cues waiting to be spoken.",
            registry=registry,
        )
        self.speak_seconds = Histogram(
            "pulsegate_gateway_voice_cue_seconds",
            "Time to render and play one voice cue.",
            registry=registry,
            buckets=(0.25, 0.5, 1, 2, 3, 5, 8, 13, 21, 30),
        )


class CueDispatcher:
    """Apply the cue policy and speak voice cues on a background thread.

    Args:
        settings: The [cues] section.
        voice: The voice output, or ``None`` for a gateway without audio.
        haptic_sink: Sends a haptic pattern to a tracker; ``None`` drops haptic parts.
        voice_gate: True while a pod is in an ear (``AirPodsLink.voice_allowed``).
        clock: Monotonic seconds; injectable for tests.
        local_time: The local wall-clock time, for quiet hours; injectable for tests.
        registry: Where the metrics are registered (default: the global registry).
    """

    def __init__(
        self,
        settings: CueSettings,
        voice: VoiceOutput | None,
        *,
        haptic_sink: HapticSink | None,
        voice_gate: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
        local_time: Callable[[], clock_time] = lambda: datetime.now().time(),
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._settings = settings
        self._voice = voice
        self._haptic_sink = haptic_sink
        self._voice_gate = voice_gate
        self._clock = clock
        self._local_time = local_time
        self._quiet_hours = settings.quiet_hours()
        self._metrics = _CueMetrics(REGISTRY if registry is None else registry)
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._queue: list[_Queued] = []  # heap, capped at MAX_QUEUED_VOICE_CUES
        self._order = itertools.count()
        self._recent_keys: OrderedDict[str, float] = OrderedDict()  # capped at MAX_DEDUPE_KEYS
        # accept times of voice cues in the last minute; never longer than the cap it enforces
        self._voice_times: deque[float] = deque(maxlen=max(1, settings.max_voice_per_minute))
        self._alarm_times: deque[float] = deque(maxlen=max(1, settings.max_alarm_voice_per_minute))
        self._counts: dict[
            tuple[str, str], int
        ] = {}  # (channel, outcome); outcomes are a fixed small set
        self._counts_lock = threading.Lock()
        self._busy = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._warned_reasons: set[str] = set()  # bounded by the few VoiceError reasons

    # -- lifecycle -------------------------------------------------------

    def start(self) -> None:
        """Start the speaking thread."""
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._speak_loop, name="cue-voice", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop after the cue being spoken; queued voice cues are dropped as ``shutdown``."""
        with self._work:
            self._stopping = True
            dropped, self._queue = self._queue, []
            self._work.notify_all()
        for _ in dropped:
            self._count("voice", "shutdown")
        self._metrics.queued.set(0)
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until no voice cue is queued or being spoken.

        Returns:
            True if that happened within ``timeout_s``.
        """
        with self._work:
            return self._work.wait_for(lambda: not self._queue and not self._busy, timeout_s)

    # -- the policy ------------------------------------------------------

    def submit(self, cue: Cue) -> CueOutcome:
        """Apply the policy to ``cue``: send its haptic part, queue its voice part.

        Never blocks on speech. Returns:
            What happened to each part (see :class:`CueOutcome`).
        """
        now = self._clock()
        whole = self._whole_cue_verdict(cue, now)
        if whole is not None:
            outcome = CueOutcome(
                voice=whole if cue.voice_text else "none",
                haptic=whole if cue.haptic is not None else "none",
            )
        else:
            outcome = CueOutcome(voice=self._admit_voice(cue, now), haptic=self._send_haptic(cue))
        for channel, result in (("voice", outcome.voice), ("haptic", outcome.haptic)):
            if result not in ("none", "queued"):
                self._count(channel, result)
        return outcome

    def _whole_cue_verdict(self, cue: Cue, now: float) -> str | None:
        with self._lock:
            window = self._settings.dedupe_window_s
            while self._recent_keys and now - next(iter(self._recent_keys.values())) > window:
                self._recent_keys.popitem(last=False)
            if cue.key in self._recent_keys:
                return "duplicate"
            if cue.priority is not CuePriority.ALARM and self._in_quiet_hours():
                return "quiet_hours"
            self._recent_keys[cue.key] = now
            if len(self._recent_keys) > MAX_DEDUPE_KEYS:
                self._recent_keys.popitem(last=False)
        return None

    def _in_quiet_hours(self) -> bool:
        if self._quiet_hours is None:
            return False
        start, end = self._quiet_hours
        now = self._local_time()
        if start <= end:
            return start <= now < end
        return now >= start or now < end  # the range wraps midnight

    def _send_haptic(self, cue: Cue) -> str:
        if cue.haptic is None:
            return "none"
        if self._haptic_sink is None:
            return "no_haptic_sink"
        if not cue.device_id:
            return "no_target"
        # The sink is the gateway's code; whatever it raises must not lose the voice part.
        try:
            self._haptic_sink(cue.device_id, cue.haptic, cue.key)
        except Exception:
            logger.warning(
                "Haptic sink failed for cue %r to device %s", cue.key, cue.device_id, exc_info=True
            )
            return "sink_error"
        return "sent"

    def _admit_voice(self, cue: Cue, now: float) -> str:
        if not cue.voice_text:
            return "none"
        if self._voice is None:
            return "no_audio_sink"
        if self._voice.unavailable_reason is not None:
            return self._voice.unavailable_reason
        if not self._voice_gate():
            return "not_in_ear"
        with self._work:
            alarm = cue.priority is CuePriority.ALARM
            times = self._alarm_times if alarm else self._voice_times
            cap = (
                self._settings.max_alarm_voice_per_minute
                if alarm
                else self._settings.max_voice_per_minute
            )
            while times and now - times[0] >= _RATE_WINDOW_S:
                times.popleft()
            if len(times) >= cap:
                return "rate_limited"
            verdict = self._enqueue_locked(cue, now)
            if verdict == "queued":
                times.append(now)
            return verdict

    def _enqueue_locked(self, cue: Cue, now: float) -> str:
        item = _Queued(int(cue.priority), next(self._order), now, cue)
        if len(self._queue) >= MAX_QUEUED_VOICE_CUES:
            weakest = max(self._queue)
            if item > weakest:
                return "queue_full"
            self._queue.remove(weakest)
            heapq.heapify(self._queue)
            self._count("voice", "queue_full")
        heapq.heappush(self._queue, item)
        self._metrics.queued.set(len(self._queue))
        self._work.notify_all()
        return "queued"

    # -- the speaking thread ---------------------------------------------

    def _speak_loop(self) -> None:
        while True:
            with self._work:
                self._busy = False
                self._work.notify_all()
                self._work.wait_for(lambda: self._queue or self._stopping)
                if self._stopping:
                    return
                item = heapq.heappop(self._queue)
                self._busy = True
                self._metrics.queued.set(len(self._queue))
            self._speak(item)

    def _speak(self, item: _Queued) -> None:
        if self._clock() - item.enqueued_s > self._settings.max_age_s:
            self._count("voice", "stale")
            return
        if not self._voice_gate():
            self._count("voice", "not_in_ear")
            return
        assert self._voice is not None and item.cue.voice_text  # checked by _admit_voice
        started = time.monotonic()
        try:
            self._voice.speak(item.cue.voice_text, label=item.cue.key)
        except VoiceError as exc:
            level = logging.DEBUG if exc.reason in self._warned_reasons else logging.WARNING
            self._warned_reasons.add(exc.reason)
            logger.log(level, "Voice cue %r not spoken: %s", item.cue.key, exc)
            self._count("voice", exc.reason)
            return
        self._metrics.speak_seconds.observe(time.monotonic() - started)
        self._count("voice", "sent")

    # -- status ----------------------------------------------------------

    def _count(self, channel: str, outcome: str) -> None:
        # a lock of its own: _count is also called with self._lock held
        with self._counts_lock:
            self._counts[(channel, outcome)] = self._counts.get((channel, outcome), 0) + 1
        self._metrics.cues.labels(channel, outcome).inc()

    def status(self) -> dict[str, Any]:
        """Cue counts for the gateway's status JSON.

        Returns:
            ``{"queued": n, "voice": {"sent": n, "dropped": {reason: n}},
            "haptic": {...}}``.
        """
        with self._counts_lock:
            counts = dict(self._counts)
        result: dict[str, Any] = {"queued": len(self._queue)}
        for channel in ("voice", "haptic"):
            dropped = {o: n for (c, o), n in counts.items() if c == channel and o != "sent"}
            result[channel] = {
                "sent": counts.get((channel, "sent"), 0),
                "dropped": dict(sorted(dropped.items())),
            }
        return result
