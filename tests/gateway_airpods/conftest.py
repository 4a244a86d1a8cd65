"""Fixtures for the AirPods tests: a real player script and sox measurements."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.airpods import VoiceSettings


@dataclass
class Player:
    """A real player command: a shell script that copies each WAV it is given into ``played_dir``."""

    script: Path
    played_dir: Path

    def played(self) -> list[Path]:
        """The WAV files played so far, in the order they were played."""
        log = self.played_dir / "order.log"
        if not log.exists():
            return []
        return [self.played_dir / name for name in log.read_text().split()]


@pytest.fixture
def player(tmp_path: Path) -> Player:
    played = tmp_path / "played"
    played.mkdir()
    script = tmp_path / "copy-player"
    script.write_text(
        f'#!/bin/sh\nset -e\ncp "$1" "{played}/"\nbasename "$1" >> "{played}/order.log"\n'
    )
    script.chmod(0o755)
    return Player(script, played)


@pytest.fixture
def voice_settings(player: Player, tmp_path: Path) -> VoiceSettings:
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.fail("espeak-ng and sox are required: apt-get install espeak-ng sox")
    return VoiceSettings(player_command=[str(player.script)], render_dir=tmp_path / "render")


def sox_stat(wav: Path) -> dict[str, float]:
    """``sox FILE -n stat`` as a dict: 'Length (seconds)', 'RMS amplitude', ..."""
    done = subprocess.run(
        ["sox", str(wav), "-n", "stat"], capture_output=True, text=True, check=True
    )
    stats = {}
    for line in done.stderr.splitlines():  # sox prints stat to stderr
        if match := re.match(r"^(.+?):\s+(-?[\d.]+)$", line.strip()):
            stats[" ".join(match.group(1).split())] = float(match.group(2))
    return stats
