"""packaging/debian/build-deb: the package it builds holds what the appliance needs,
leaves out the test fixtures, and the packaged `pulsegate` really runs.

The package is built once per session (a few minutes on a cold pip cache:
every dependency comes from PyPI) and extracted with dpkg-deb -x into a
temporary root. The venv inside runs from there because a venv finds its
site-packages through pyvenv.cfg beside its interpreter symlink, which
points at /usr/bin/python3 as it will on the appliance.
"""

from __future__ import annotations

import os
import pty
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD_DEB = REPO / "packaging" / "debian" / "build-deb"
VENV = "opt/pulsegate/venv"

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module", autouse=True)
def _build_tools() -> None:
    """The build needs dpkg-deb and Debian's python3 with venv (python3-venv)."""
    assert shutil.which("dpkg-deb"), "dpkg-deb not installed: apt-get install dpkg"
    done = subprocess.run(["/usr/bin/python3", "-c", "import ensurepip"], capture_output=True)
    assert done.returncode == 0, "Debian's python3 cannot make a venv: apt-get install python3-venv"


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deb")
    print("building the .deb (minutes on a cold pip cache)...", file=sys.stderr)
    done = subprocess.run(
        [str(BUILD_DEB), "--out", str(out)], capture_output=True, text=True, timeout=1500
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def root(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("root")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True)
    return target


def _listing(deb: Path) -> list[str]:
    out = subprocess.run(
        ["dpkg-deb", "-c", str(deb)], check=True, capture_output=True, text=True
    ).stdout
    return [line.split()[5].removeprefix(".") for line in out.splitlines()]


def _field(deb: Path, name: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "-f", str(deb), name], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_package_name_version_and_architecture(deb: Path) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], check=True, capture_output=True, text=True
    ).stdout.strip()

    assert deb.name == f"pulsegate-gateway_{version}_{arch}.deb"
    assert (_field(deb, "Package"), _field(deb, "Version"), _field(deb, "Architecture")) == (
        "pulsegate-gateway",
        version,
        arch,
    )
    depends = _field(deb, "Depends")
    assert (
        "python3 (>= 3.11)" in depends and "python3 (<< 3.12)" in depends and "adduser" in depends
    )


def test_unit_rule_and_config_are_in_it_and_the_configs_are_conffiles(deb: Path) -> None:
    files = _listing(deb)
    conffiles = subprocess.run(
        ["dpkg-deb", "-I", str(deb), "conffiles"], check=True, capture_output=True, text=True
    ).stdout

    for path in (
        "/lib/systemd/system/pulsegate-gateway.service",
        "/lib/udev/rules.d/99-pulsegate-trackers.rules",
        "/etc/pulsegate/gateway.toml",
        "/etc/default/pulsegate-gateway",
        f"/{VENV}/bin/pulsegate",
    ):
        assert path in files
    assert conffiles.split() == ["/etc/pulsegate/gateway.toml", "/etc/default/pulsegate-gateway"]


def test_no_test_fixture_ships(deb: Path) -> None:
    """Some recordings are GPL/AGPL test data: neither their folder nor any of their files may ship."""
    files = _listing(deb)
    fixture_names = {p.name for p in (REPO / "tests" / "fixtures").rglob("*") if p.is_file()}
    assert len(fixture_names) > 10  # the guard below must have something to guard

    assert [f for f in files if "tests/fixtures" in f] == []
    assert sorted({Path(f).name for f in files} & fixture_names) == []


def test_packaged_files_are_the_sources(root: Path) -> None:
    pairs = {
        "lib/systemd/system/pulsegate-gateway.service": "packaging/systemd/pulsegate-gateway.service",
        "lib/udev/rules.d/99-pulsegate-trackers.rules": "packaging/udev/99-pulsegate-trackers.rules",
        "etc/pulsegate/gateway.toml": "packaging/config/gateway.toml",
    }
    for packaged, source in pairs.items():
        assert (root / packaged).read_bytes() == (REPO / source).read_bytes(), packaged
    # Secrets go in the environment file: root only.
    assert (root / "etc/default/pulsegate-gateway").stat().st_mode & 0o777 == 0o600


def test_venv_names_its_installed_path_not_the_build_directory(root: Path) -> None:
    script = (root / VENV / "bin" / "pulsegate").read_text()
    assert script.splitlines()[0] == f"#!/{VENV}/bin/python"
    assert os.readlink(root / VENV / "bin" / "python3") == "/usr/bin/python3"
    assert os.readlink(root / "usr/bin/pulsegate") == f"/{VENV}/bin/pulsegate"
    assert "pulsegate-deb." not in (root / VENV / "pyvenv.cfg").read_text()


def _packaged(root: Path, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run the packaged console script with the packaged interpreter (its #! names /opt)."""
    venv = root / VENV
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PULSEGATE_", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(kwargs.pop("env", {}))  # type: ignore[arg-type]
    return subprocess.run(
        [str(venv / "bin" / "python"), str(venv / "bin" / "pulsegate"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        **kwargs,
    )  # type: ignore[call-overload]


def test_packaged_pulsegate_help_runs(root: Path) -> None:
    done = _packaged(root, "--help")

    assert done.returncode == 0, done.stderr[-3000:]
    for group in ("central", "gateway", "shim", "tui"):
        assert f"  {group} " in done.stdout


def test_packaged_venv_has_every_runtime_dependency(root: Path, tmp_path: Path) -> None:
    """public-key signs with cryptography: a dependency used but not declared fails here."""
    from gateway._outbox import open_database

    open_database(tmp_path).close()  # public-key wants a gateway's state dir, not an empty folder
    done = _packaged(root, "gateway", "public-key", "--state-dir", str(tmp_path))

    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("-----BEGIN PUBLIC KEY-----")


@pytest.fixture
def pty_port() -> Iterator[str]:
    controller, port = pty.openpty()
    yield os.ttyname(port)
    os.close(controller)
    os.close(port)


def test_packaged_gateway_starts_on_a_serial_port_and_stops_on_sigterm(
    root: Path, tmp_path: Path, pty_port: str
) -> None:
    """The daemon from the package, with the packaged config, reads a pseudo-terminal."""
    state_dir = tmp_path / "state"
    venv = root / VENV
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PULSEGATE_", "PYTHON", "VIRTUAL_ENV"))
    }
    # No Bluetooth adapter and no metrics port on a build machine.
    env |= {"PULSEGATE_AIRPODS_ENABLED": "false", "PULSEGATE_METRICS_LISTEN_ADDRESS": ""}
    daemon = subprocess.Popen(
        [
            str(venv / "bin" / "python"),
            str(venv / "bin" / "pulsegate"),
            "gateway",
            "run",
            "--config",
            str(root / "etc/pulsegate/gateway.toml"),
            "--state-dir",
            str(state_dir),
            "--port",
            pty_port,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while (
            not (state_dir / "control.sock").exists()
            and daemon.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.1)
        assert daemon.poll() is None, daemon.communicate()[1][-3000:]
        assert (state_dir / "control.sock").exists()
    finally:
        daemon.send_signal(signal.SIGTERM)
        _out, err = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, err[-3000:]


_ISOLATED_POSTINST = """
set -e
work="$1"; postinst="$2"
cp -a /etc "$work/etc"
mount --bind "$work/etc" /etc
mkdir "$work/var-lib-systemd"
mount --bind "$work/var-lib-systemd" /var/lib/systemd
sh "$postinst" configure ""
sh "$postinst" configure "0.1.0"
echo "passwd: $(grep -c '^pulsegate:' /etc/passwd)"
echo "groups: $(id -nG pulsegate)"
echo "shell: $(getent passwd pulsegate | cut -d: -f6,7)"
"""


def test_postinst_creates_the_user_once_and_is_safe_to_rerun(deb: Path, tmp_path: Path) -> None:
    """postinst runs twice against a private copy of /etc (a mount namespace): the host is untouched."""
    assert os.geteuid() == 0 and shutil.which("unshare"), "this check needs root and unshare (util-linux)"
    assert subprocess.run(["getent", "passwd", "pulsegate"], capture_output=True).returncode != 0, (
        "this machine already has a pulsegate user; the check needs one without"
    )
    control = tmp_path / "control"
    subprocess.run(["dpkg-deb", "-e", str(deb), str(control)], check=True)

    done = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            _ISOLATED_POSTINST,
            "sh",
            str(tmp_path),
            str(control / "postinst"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    report = dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)
    assert report["passwd"] == "1"
    assert {"pulsegate", "dialout"} <= set(report["groups"].split())
    assert report["shell"] == "/var/lib/pulsegate:/usr/sbin/nologin"
    assert subprocess.run(["getent", "passwd", "pulsegate"], capture_output=True).returncode != 0
