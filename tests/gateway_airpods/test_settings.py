"""[airpods], [voice] and [cues] settings: defaults, refusals, and loading through pulsegate.config."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time
from pathlib import Path

import pytest

from gateway.airpods import AirPodsSettings, CueSettings, VoiceSettings
from pulsegate.config import ConfigError, load_config


@dataclass
class GatewayConfig:
    """The three sections as the gateway's config class would hold them."""

    airpods: AirPodsSettings = field(default_factory=AirPodsSettings)
    voice: VoiceSettings = field(default_factory=VoiceSettings)
    cues: CueSettings = field(default_factory=CueSettings)


def test_defaults_are_valid_and_sensible() -> None:
    config = load_config(GatewayConfig, env={})
    assert config.airpods.rssi_floor_dbm == -60 and config.airpods.strongest_window_s == 10.0
    assert config.voice.tts_command == "espeak-ng" and config.voice.player_command == []
    assert config.cues.quiet_hours() is None


def test_toml_file_and_environment_override(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        '[airpods]\naddresses = ["aa:bb:cc:dd:ee:ff"]\nmodels = ["0x0E20"]\nrssi_floor_dbm = -65\n'
        '[voice]\nplayer_command = ["pw-play", "--volume", "0.8"]\nrender_dir = "/tmp/voice"\n'
        '[cues]\nquiet_hours_start = "22:00"\nquiet_hours_end = "06:00"\nhr_zone_floors_pct = [55, 70, 85]\n'
    )
    config = load_config(GatewayConfig, path, env={"PULSEGATE_AIRPODS_SCANNING_MODE": "passive"})
    assert config.airpods.address_set == frozenset({"AA:BB:CC:DD:EE:FF"})
    assert (
        config.airpods.model_codes == frozenset({0x0E20})
        and config.airpods.scanning_mode == "passive"
    )
    assert config.voice.render_dir == Path("/tmp/voice")
    assert config.cues.quiet_hours() == (time(22, 0), time(6, 0))
    assert config.cues.hr_zone_floors_pct == [55, 70, 85]


@pytest.mark.parametrize(
    ("section", "body", "message"),
    [
        ("airpods", 'addresses = ["not-an-address"]', "is not a Bluetooth address"),
        ("airpods", 'models = ["AirPods"]', "4-digit hex model code"),
        ("airpods", 'scanning_mode = "loud"', "'active' or 'passive'"),
        ("airpods", "away_after_s = 0", "away_after_s must be greater than 0"),
        (
            "airpods",
            "retry_initial_s = 10.0\nretry_max_s = 5.0",
            "must not be below retry_initial_s",
        ),
        ("voice", "words_per_minute = 1000", "between 80 and 450"),
        ("cues", 'quiet_hours_start = "22:00"', "must be set together"),
        ("cues", 'quiet_hours_start = "25:00"\nquiet_hours_end = "06:00"', "24-hour time"),
        ("cues", "hr_zone_floors_pct = [60, 50]", "strictly ascending"),
        ("cues", "buffer_alert_pct = 120.0", "(0, 100]"),
    ],
)
def test_bad_value_is_refused_with_the_key_named(
    tmp_path: Path, section: str, body: str, message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f"[{section}]\n{body}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(GatewayConfig, path, env={})
    text = str(caught.value)
    assert message in text and f"[{section}]" in text and "\n" not in text
