"""Relative paths in a config file are read as beside the file, wherever the command runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from central.settings import load_settings as load_central_settings
from gateway.settings import load_settings as load_gateway_settings


def test_relative_paths_in_a_file_resolve_against_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "ca.pem").write_text("not checked here, only found\n")
    config = folder / "gateway.toml"
    config.write_text('[gateway]\nstate_dir = "state"\n[uplink]\ntls_ca_file = "ca.pem"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for key in [k for k in os.environ if k.startswith("PULSEGATE_")]:
        monkeypatch.delenv(key)
    settings = load_gateway_settings("../etc/gateway.toml")
    assert settings.gateway.state_dir == folder / "state"
    assert settings.uplink.tls_ca_file == folder / "ca.pem"


def test_absolute_paths_and_environment_values_are_kept_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "central.toml"
    config.write_text(f'[central]\nstate_dir = "{tmp_path / "abs"}"\n')
    for key in [k for k in os.environ if k.startswith("PULSEGATE_")]:
        monkeypatch.delenv(key)
    assert load_central_settings(config).central.state_dir == tmp_path / "abs"
    monkeypatch.setenv("PULSEGATE_CENTRAL_STATE_DIR", "relative/from/env")
    assert load_central_settings(config).central.state_dir == Path("relative/from/env")
