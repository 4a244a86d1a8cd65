"""Voice cues: espeak-ng renders text to a WAV file, a player command plays it.

The player sends the sound to the system's default audio sink; routing that
sink to the AirPods is PipeWire's or PulseAudio's job (see PAIRING.md).
"""

from __future__ import annotations

import itertools
import logging
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from gateway.airpods._errors import VoiceError
from gateway.airpods.settings import VoiceSettings

__all__ = ["VoiceOutput", "DEFAULT_PLAYERS"]

logger = logging.getLogger(__name__)

#: Players tried in order when voice.player_command is empty: PipeWire's,
#: PulseAudio's, then plain ALSA's.
DEFAULT_PLAYERS: tuple[str, ...] = ("pw-play", "paplay", "aplay")
#: Characters of stderr kept in an error message; espeak-ng and the players
#: print at most a line or two that matters.
_STDERR_CHARS = 300
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
#: Longest cue label kept in a WAV file name; file names stay well under 255 bytes.
_MAX_LABEL_CHARS = 80


class VoiceOutput:
    """Render and play short spoken cues.

    Construction never fails for a missing tool: ``available`` turns false and
    ``unavailable_reason`` says why (``voice_disabled``, ``no_tts_engine`` or
    ``no_audio_sink``), after one log line.

    Args:
        settings: The [voice] section.
        which: Finds an executable on PATH (``shutil.which``); injectable for tests.
    """

    def __init__(
        self, settings: VoiceSettings, *, which: Callable[[str], str | None] = shutil.which
    ) -> None:
        self._settings = settings
        self._names = itertools.count(1)
        self._own_dir: tempfile.TemporaryDirectory[str] | None = None
        self.tts_path = which(settings.tts_command)
        self.player_argv = self._find_player(which)
        self.unavailable_reason = self._check(settings)

    def _find_player(self, which: Callable[[str], str | None]) -> list[str] | None:
        if self._settings.player_command:
            argv = list(self._settings.player_command)
            found = which(argv[0])
            return [found, *argv[1:]] if found else None
        for name in DEFAULT_PLAYERS:
            found = which(name)
            if found:
                return [found]
        return None

    def _check(self, settings: VoiceSettings) -> str | None:
        if not settings.enabled:
            logger.info("Voice cues disabled by [voice] enabled = false")
            return "voice_disabled"
        if self.tts_path is None:
            logger.warning(
                "Voice cues disabled: text-to-speech command %r not found; install espeak-ng "
                "(apt-get install espeak-ng) or set voice.tts_command",
                settings.tts_command,
            )
            return "no_tts_engine"
        if self.player_argv is None:
            wanted = (
                settings.player_command[0]
                if settings.player_command
                else ", ".join(DEFAULT_PLAYERS)
            )
            logger.warning(
                "Voice cues disabled: no audio player (%s) on PATH; install pipewire-bin, "
                "pulseaudio-utils or alsa-utils, or set voice.player_command",
                wanted,
            )
            return "no_audio_sink"
        logger.info("Voice cues via %s, played by %s", self.tts_path, self.player_argv[0])
        return None

    @property
    def available(self) -> bool:
        """True when both the speech engine and a player were found."""
        return self.unavailable_reason is None

    def _render_dir(self) -> Path:
        if self._settings.render_dir is not None:
            self._settings.render_dir.mkdir(parents=True, exist_ok=True)
            return self._settings.render_dir
        if self._own_dir is None:
            self._own_dir = tempfile.TemporaryDirectory(prefix="pulsegate-voice-")
        return Path(self._own_dir.name)

    def render(self, text: str, wav_path: Path | None = None, *, label: str = "cue") -> Path:
        """Render ``text`` to a WAV file with espeak-ng.

        Args:
            text: What to say; at most ``voice.max_text_chars`` characters.
            wav_path: Where to write; default a fresh file in the render directory.
            label: Goes into the default file name (``<n>-<label>.wav``), so a
                render directory shows which cue a file belongs to.

        Returns:
            The WAV file's path.

        Raises:
            VoiceError: the text is empty or too long, or espeak-ng failed.
        """
        text = " ".join(text.split())
        if not text:
            raise VoiceError(
                "render_failed", "voice cue text is empty; give the cue something to say"
            )
        if len(text) > self._settings.max_text_chars:
            raise VoiceError(
                "text_too_long",
                f"voice cue text has {len(text)} characters, more than "
                f"voice.max_text_chars = {self._settings.max_text_chars}",
            )
        if self.tts_path is None:
            raise VoiceError(
                "no_tts_engine", f"text-to-speech command {self._settings.tts_command!r} not found"
            )
        if wav_path is None:
            safe_label = _UNSAFE_NAME_CHARS.sub("_", label)[:_MAX_LABEL_CHARS]
            wav_path = self._render_dir() / f"{next(self._names):06d}-{safe_label}.wav"
        # The text goes in on stdin, so a text starting with "-" is never read as an option.
        argv = [
            self.tts_path,
            "-v",
            self._settings.voice,
            "-s",
            str(self._settings.words_per_minute),
            "-w",
            str(wav_path),
            "--stdin",
        ]
        self._run(argv, "render_failed", self._settings.render_timeout_s, stdin_text=text)
        if not wav_path.is_file() or wav_path.stat().st_size == 0:
            raise VoiceError("render_failed", f"{argv[0]} exited without writing {wav_path}")
        return wav_path

    def play(self, wav_path: Path) -> None:
        """Play a WAV file through the configured player.

        Raises:
            VoiceError: no player, or the player failed or timed out.
        """
        if self.player_argv is None:
            raise VoiceError("no_audio_sink", "no audio player found; set voice.player_command")
        if any("{wav}" in arg for arg in self.player_argv):
            argv = [arg.replace("{wav}", str(wav_path)) for arg in self.player_argv]
        else:
            argv = [*self.player_argv, str(wav_path)]
        self._run(argv, "play_failed", self._settings.play_timeout_s)

    def speak(self, text: str, *, label: str = "cue") -> None:
        """Render ``text``, play it, and delete the WAV file.

        Args:
            text: What to say.
            label: Names the WAV file (see :meth:`render`).

        Raises:
            VoiceError: rendering or playing failed (``reason`` says which).
        """
        if self.unavailable_reason is not None:
            raise VoiceError(
                self.unavailable_reason, f"voice output unavailable: {self.unavailable_reason}"
            )
        wav_path = self.render(text, label=label)
        try:
            self.play(wav_path)
        finally:
            wav_path.unlink(missing_ok=True)

    def close(self) -> None:
        """Remove the private render directory, if one was made."""
        if self._own_dir is not None:
            self._own_dir.cleanup()
            self._own_dir = None

    @staticmethod
    def _run(argv: list[str], reason: str, timeout_s: float, stdin_text: str | None = None) -> None:
        try:
            done = subprocess.run(
                argv,
                input=stdin_text,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise VoiceError(reason, f"{argv[0]} took longer than {timeout_s:.0f} s") from None
        except OSError as exc:
            raise VoiceError(reason, f"cannot run {argv[0]}: {exc.strerror or exc}") from exc
        if done.returncode != 0:
            stderr = " ".join(done.stderr.split())[:_STDERR_CHARS]
            raise VoiceError(
                reason, f"{argv[0]} exited with status {done.returncode}: {stderr or 'no message'}"
            )
