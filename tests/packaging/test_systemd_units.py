"""The systemd units: systemd's own verifier accepts them, each ExecStart is a real
`pulsegate` command line, and each PULSEGATE_* variable they set is a real setting."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

import central.settings
import gateway.settings
from pulsegate.config import describe

SYSTEMD_DIR = Path(__file__).resolve().parents[2] / "packaging" / "systemd"
INSTALLED_COMMAND = "/opt/pulsegate/venv/bin/pulsegate"

#: unit file -> (instance name for templates, config the unit reads, its settings class)
UNITS = {
    "pulsegate-gateway.service": (
        None,
        "/etc/pulsegate/gateway.toml",
        gateway.settings.GatewaySettings,
    ),
    "pulsegate-ingest@.service": (
        "9466",
        "/etc/pulsegate/central.toml",
        central.settings.CentralSettings,
    ),
    "pulsegate-incidents.service": (
        None,
        "/etc/pulsegate/central.toml",
        central.settings.CentralSettings,
    ),
    "pulsegate-detect.service": (
        None,
        "/etc/pulsegate/central.toml",
        central.settings.CentralSettings,
    ),
}

#: Ceiling of `systemd-analyze security` exposure (0 safest, 10 worst): a
#: change that drops hardening makes the score climb past it.
MAX_EXPOSURE = 2.0



@pytest.fixture
def systemd_tools() -> None:
    """systemd-analyze and systemd-sysusers come with Debian's systemd package (no PID 1 needed)."""
    for tool in ("systemd-analyze", "systemd-sysusers"):
        assert shutil.which(tool), f"{tool} not installed: apt-get install systemd"


def parse_unit(text: str, instance: str | None = None) -> dict[str, dict[str, list[str]]]:
    """Sections -> keys -> values, keeping repeated keys; %i becomes ``instance``."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"assignment outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE: {line!r}"
        if instance is not None:
            value = value.replace("%i", instance)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _unit(name: str) -> dict[str, dict[str, list[str]]]:
    return parse_unit((SYSTEMD_DIR / name).read_text(), UNITS[name][0])


@pytest.mark.parametrize("name", sorted(UNITS))
def test_exec_start_is_a_real_pulsegate_command(name: str, dev_pulsegate: Path) -> None:
    """ExecStart's arguments, given to the real CLI with --help, parse (a wrong
    subcommand or option name fails) and reach the intended command."""
    (exec_start,) = _unit(name)["Service"]["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[0] == INSTALLED_COMMAND

    done = subprocess.run(
        [str(dev_pulsegate), *argv[1:], "--help"], capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 0, done.stderr
    subcommand = " ".join(a for a in argv[1:] if not a.startswith("-") and not a.startswith("/"))
    assert f"Usage: pulsegate {subcommand} [OPTIONS]" in done.stdout
    assert argv[argv.index("--config") + 1] == UNITS[name][1]


@pytest.mark.parametrize(
    "name", ["pulsegate-ingest@.service", "pulsegate-incidents.service", "pulsegate-detect.service"]
)
def test_environment_names_real_settings(name: str) -> None:
    """Every PULSEGATE_* a unit sets is a key of its part (the loader ignores
    unknown variables, so a typo here would silently do nothing)."""
    settings_cls = UNITS[name][2]
    known = {env for _key, env, _default in describe(settings_cls)}

    assignments = [shlex.split(v)[0] for v in _unit(name)["Service"].get("Environment", [])]
    names = [a.partition("=")[0] for a in assignments if a.startswith("PULSEGATE_")]

    assert "PULSEGATE_CENTRAL_STATE_DIR" in names, (
        "the unit must pin the state directory systemd prepares"
    )
    assert sorted(set(names) - known) == []


def test_gateway_unit_runs_as_pulsegate_with_serial_access() -> None:
    service = _unit("pulsegate-gateway.service")["Service"]
    argv = shlex.split(service["ExecStart"][0])

    assert service["User"] == ["pulsegate"]
    assert "dialout" in service["SupplementaryGroups"][0].split()
    assert service["Restart"] == ["on-failure"]
    # --state-dir is where systemd's StateDirectory= puts the state.
    assert argv[argv.index("--state-dir") + 1] == "/var/lib/" + service["StateDirectory"][0]
    # Serial devices and the control socket stay reachable.
    assert service.get("PrivateDevices", ["no"]) == ["no"]
    assert "DevicePolicy" not in service
    assert "AF_UNIX" in service["RestrictAddressFamilies"][0].split()


def test_ingest_instances_get_their_own_metrics_port() -> None:
    """Two instances of the template on one host must not share a port."""
    text = (SYSTEMD_DIR / "pulsegate-ingest@.service").read_text()
    ports = set()
    for instance in ("9466", "9467"):
        env = dict(
            shlex.split(v)[0].split("=", 1)
            for v in parse_unit(text, instance)["Service"]["Environment"]
        )
        ports.add(env["PULSEGATE_INGEST_METRICS_ADDRESS"])
    assert ports == {"127.0.0.1:9466", "127.0.0.1:9467"}


def _verifiable_copy(name: str, tmp_path: Path, dev_pulsegate: Path) -> Path:
    """The unit with ExecStart pointing at an executable that exists here
    (verify checks it), named as an instance if it is a template."""
    text = (SYSTEMD_DIR / name).read_text().replace(INSTALLED_COMMAND, str(dev_pulsegate))
    instance = UNITS[name][0]
    target = tmp_path / (name.replace("@.", f"@{instance}.") if instance else name)
    target.write_text(text)
    return target


@pytest.mark.usefixtures("systemd_tools")
@pytest.mark.parametrize("name", sorted(UNITS))
def test_systemd_analyze_verify_accepts_the_unit(
    name: str, tmp_path: Path, dev_pulsegate: Path
) -> None:
    """No errors and no warnings: an unknown key is only a warning, and would slip by on exit status alone."""
    unit = _verifiable_copy(name, tmp_path, dev_pulsegate)

    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == ""


@pytest.mark.usefixtures("systemd_tools")
def test_systemd_analyze_verify_catches_a_misspelt_key(tmp_path: Path, dev_pulsegate: Path) -> None:
    """The check above can fail: a typo in a hardening option is reported."""
    unit = _verifiable_copy("pulsegate-gateway.service", tmp_path, dev_pulsegate)
    unit.write_text(unit.read_text().replace("ProtectSystem=", "ProtectSystm="))

    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )

    assert "Unknown key 'ProtectSystm'" in done.stderr


@pytest.mark.usefixtures("systemd_tools")
@pytest.mark.parametrize("name", sorted(UNITS))
def test_hardening_keeps_exposure_low(name: str, tmp_path: Path, dev_pulsegate: Path) -> None:
    unit = _verifiable_copy(name, tmp_path, dev_pulsegate)

    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout + done.stderr)
    assert match is not None, done.stdout + done.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE


@pytest.mark.usefixtures("systemd_tools")
def test_sysusers_entry_creates_the_service_user(tmp_path: Path) -> None:
    """systemd-sysusers, run on an empty root, creates `pulsegate` and puts it in dialout."""
    (tmp_path / "etc").mkdir()
    config = SYSTEMD_DIR / "pulsegate.sysusers"

    subprocess.run(
        ["systemd-sysusers", f"--root={tmp_path}", str(config)],
        check=True,
        capture_output=True,
        timeout=60,
    )

    passwd = {
        line.split(":")[0]: line.split(":")
        for line in (tmp_path / "etc/passwd").read_text().splitlines()
    }
    groups = {
        line.split(":")[0]: line.split(":")
        for line in (tmp_path / "etc/group").read_text().splitlines()
    }
    assert passwd["pulsegate"][5:] == ["/var/lib/pulsegate", "/usr/sbin/nologin"]
    assert "pulsegate" in groups["dialout"][3].split(",")
