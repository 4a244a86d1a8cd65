"""Voice output: real espeak-ng renders, measured with sox, played by a real player command."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from gateway.airpods import VoiceError, VoiceOutput, VoiceSettings

from .conftest import Player, sox_stat

#: espeak-ng speaks roughly 2.5 to 3 words a second at 165 wpm; these bounds
#: are wide enough for any voice data version and tight enough to catch
#: silence-only files or a runaway render.
SECONDS_PER_WORD = (0.15, 1.0)
RMS_FLOOR = 0.01  # speech measures about 0.1 here; digital silence is 0


def test_render_produces_audible_speech_of_plausible_length(voice_settings: VoiceSettings) -> None:
    voice = VoiceOutput(voice_settings)
    text = "Five kilometres done, keep going"
    wav = voice.render(text)
    stats = sox_stat(wav)
    words = len(text.split())
    assert (
        SECONDS_PER_WORD[0] * words
        <= stats["Length (seconds)"]
        <= SECONDS_PER_WORD[1] * words + 0.5
    )
    assert stats["RMS amplitude"] > RMS_FLOOR


def test_longer_text_and_slower_rate_take_longer(
    voice_settings: VoiceSettings, tmp_path: Path
) -> None:
    voice = VoiceOutput(voice_settings)
    short = sox_stat(voice.render("Ten minutes"))["Length (seconds)"]
    long = sox_stat(voice.render("Ten minutes, heart rate zone three, eight kilometres"))[
        "Length (seconds)"
    ]
    slow_voice = VoiceOutput(
        VoiceSettings(
            words_per_minute=90,
            render_dir=tmp_path / "slow",
            player_command=voice_settings.player_command,
        )
    )
    slow = sox_stat(slow_voice.render("Ten minutes"))["Length (seconds)"]
    assert long > short * 2
    assert slow > short * 1.4


def test_text_starting_with_a_dash_is_spoken_not_parsed_as_an_option(
    voice_settings: VoiceSettings,
) -> None:
    stats = sox_stat(VoiceOutput(voice_settings).render("-v minus five degrees"))
    assert stats["Length (seconds)"] > 0.8 and stats["RMS amplitude"] > RMS_FLOOR


def test_speak_renders_plays_through_the_player_and_cleans_up(
    voice_settings: VoiceSettings, player: Player
) -> None:
    voice = VoiceOutput(voice_settings)
    voice.speak("Test cue from the gateway", label="test:tracker-1:1")
    (played,) = player.played()
    assert played.name.endswith("-test_tracker-1_1.wav")
    stats = sox_stat(played)
    assert stats["Length (seconds)"] > 0.8 and stats["RMS amplitude"] > RMS_FLOOR
    assert voice_settings.render_dir is not None and list(voice_settings.render_dir.iterdir()) == []


def test_player_argument_placeholder(
    voice_settings: VoiceSettings, player: Player, tmp_path: Path
) -> None:
    """A ``{wav}`` argument is replaced by the file instead of appending it."""
    wrapper = tmp_path / "wrapper"
    wrapper.write_text(f'#!/bin/sh\n[ "$1" = "--file" ] && exec "{player.script}" "$2"\nexit 9\n')
    wrapper.chmod(0o755)
    settings = VoiceSettings(
        player_command=[str(wrapper), "--file", "{wav}"], render_dir=tmp_path / "r"
    )
    VoiceOutput(settings).speak("placeholder")
    assert len(player.played()) == 1


def test_failing_player_raises_voice_error_with_its_message(tmp_path: Path) -> None:
    broken = tmp_path / "broken-player"
    broken.write_text("#!/bin/sh\necho 'Connection failure: Connection refused' >&2\nexit 3\n")
    broken.chmod(0o755)
    voice = VoiceOutput(VoiceSettings(player_command=[str(broken)], render_dir=tmp_path / "r"))
    with pytest.raises(VoiceError) as caught:
        voice.speak("hello")
    assert caught.value.reason == "play_failed"
    assert "status 3" in str(caught.value) and "Connection refused" in str(caught.value)
    assert list((tmp_path / "r").iterdir()) == []  # the WAV is removed even when playing fails


def test_text_too_long_is_refused(voice_settings: VoiceSettings) -> None:
    with pytest.raises(VoiceError) as caught:
        VoiceOutput(voice_settings).render("word " * 100)
    assert caught.value.reason == "text_too_long" and "200" in str(caught.value)


def test_unknown_espeak_voice_raises_render_failed(tmp_path: Path, player: Player) -> None:
    voice = VoiceOutput(
        VoiceSettings(
            voice="xx-no-such-voice", player_command=[str(player.script)], render_dir=tmp_path / "r"
        )
    )
    with pytest.raises(VoiceError) as caught:
        voice.speak("hello")
    assert caught.value.reason == "render_failed" and "does not exist" in str(caught.value)


def test_no_player_on_path_disables_voice_with_one_log_line(
    monkeypatch, tmp_path: Path, caplog
) -> None:
    """Default player search over a PATH holding espeak-ng but none of pw-play, paplay, aplay."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    espeak = shutil.which("espeak-ng")
    assert espeak is not None
    os.symlink(espeak, bin_dir / "espeak-ng")
    monkeypatch.setenv("PATH", str(bin_dir))
    caplog.set_level(logging.INFO, logger="gateway.airpods")
    voice = VoiceOutput(VoiceSettings(render_dir=tmp_path / "r"))
    assert not voice.available and voice.unavailable_reason == "no_audio_sink"
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and "pw-play, paplay, aplay" in record.getMessage()
    with pytest.raises(VoiceError) as caught:
        voice.speak("hello")
    assert caught.value.reason == "no_audio_sink"


def test_default_player_is_the_first_found_on_path(monkeypatch, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("aplay", "paplay"):  # no pw-play: paplay comes next in the order
        (bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    voice = VoiceOutput(VoiceSettings(render_dir=tmp_path / "r"))
    assert voice.player_argv == [str(bin_dir / "paplay")]


def test_missing_tts_engine_disables_voice(tmp_path: Path, player: Player) -> None:
    voice = VoiceOutput(
        VoiceSettings(tts_command="no-such-espeak", player_command=[str(player.script)])
    )
    assert voice.unavailable_reason == "no_tts_engine"


def test_disabled_voice_says_so() -> None:
    assert VoiceOutput(VoiceSettings(enabled=False)).unavailable_reason == "voice_disabled"
