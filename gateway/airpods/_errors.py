"""The AirPods part's exceptions, under the gateway's tree.

::

    GatewayError
     └── AirPodsError          base of everything raised by gateway.airpods
          ├── AdvertError      a BLE advert that is not a usable AirPods status
          └── VoiceError       text-to-speech or the audio player failed
"""

from __future__ import annotations

from gateway.errors import GatewayError

__all__ = ["AirPodsError", "AdvertError", "VoiceError"]


class AirPodsError(GatewayError):
    """An expected failure in the AirPods link, the voice output or the cue policy."""


class AdvertError(AirPodsError):
    """A manufacturer-data payload is not a decodable proximity-pairing advert.

    Attributes:
        reason: A short machine-friendly code (``truncated``, ``short_payload``,
            ``unexpected_length``, ``not_proximity_pairing``), used as a metric label.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class VoiceError(AirPodsError):
    """Speech could not be rendered or played.

    Attributes:
        reason: A short machine-friendly code (``render_failed``, ``play_failed``,
            ``text_too_long``, ``no_audio_sink``, ``no_tts_engine``).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
