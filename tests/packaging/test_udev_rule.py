"""The udev rule: udev's own parser accepts it, and its names and permissions are the ones
the gateway's unit and config rely on.

udev 252 (Debian bookworm) has no `udevadm verify` (it came in 254), so the
parser is reached through `udevadm test`, run in a private mount namespace in
which tmpfs hides the machine's rules and udev database: nothing on the host
changes. It parses the rule but cannot exercise its matching, which needs a
real USB serial adapter in sysfs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

RULE = Path(__file__).resolve().parents[2] / "packaging" / "udev" / "99-pulsegate-trackers.rules"

#: Mounts tmpfs over udev's rule directories and its state, installs one rule
#: file, and lets udev parse it against a device every Linux has. Directories
#: it had to create for the mounts are removed again.
_ISOLATED_UDEVADM_TEST = """
set -e
created=""
cleanup() {
    for d in $created; do umount "$d" && rmdir "$d"; done
}
trap cleanup EXIT
for d in /etc/udev/rules.d /lib/udev/rules.d /run/udev /dev/char; do
    if [ ! -d "$d" ]; then mkdir -p "$d"; created="$created $d"; fi
    mount -t tmpfs tmpfs "$d"
done
cp "$1" /lib/udev/rules.d/
udevadm test --action=add /sys/class/tty/ptmx
"""


def _udev_parse_errors(rule_file: Path) -> list[str]:
    done = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            _ISOLATED_UDEVADM_TEST,
            "sh",
            str(rule_file),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert (
        f"Reading rules file: /usr/lib/udev/rules.d/{rule_file.name}" in output
        or f"Reading rules file: /lib/udev/rules.d/{rule_file.name}" in output
    ), output[-2000:]
    return [line for line in output.splitlines() if f"{rule_file.name}:" in line]


@pytest.fixture
def _udev_tools() -> None:
    assert shutil.which("udevadm") and shutil.which("unshare"), "needs udevadm (apt-get install udev) and unshare"
    assert os.geteuid() == 0, "needs root for a private mount namespace"


_needs_udevadm = pytest.mark.usefixtures("_udev_tools")


@_needs_udevadm
def test_udev_parses_the_rule_without_complaint() -> None:
    assert _udev_parse_errors(RULE) == []


@_needs_udevadm
def test_udev_check_reports_a_broken_rule(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key and an unclosed quote are reported."""
    broken = tmp_path / RULE.name
    text = RULE.read_text().replace('GROUP="dialout"', 'GRUOP="dialout"')
    broken.write_text(text.replace('ENV{ID_MM_DEVICE_IGNORE}="1"', 'ENV{ID_MM_DEVICE_IGNORE}="1'))

    errors = _udev_parse_errors(broken)

    assert any("Invalid key 'GRUOP'" in e for e in errors), errors
    assert len(errors) >= 2, errors


def _active_lines() -> list[str]:
    return [
        line for line in RULE.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]


def test_every_symlink_is_under_dev_pulsegate_tracker() -> None:
    links = [m for line in _active_lines() for m in re.findall(r'SYMLINK\+="([^"]+)"', line)]
    assert links and all(link.startswith("pulsegate/tracker-") for link in links)


def test_ports_are_given_to_dialout_and_hidden_from_modemmanager() -> None:
    lines = _active_lines()
    assert 'GROUP="dialout", MODE="0660"' in lines
    assert 'ENV{ID_MM_DEVICE_IGNORE}="1"' in lines


def test_known_adapters_are_ftdi_cp210x_and_ch340() -> None:
    vendors = {
        m
        for line in _active_lines()
        for m in re.findall(r'ATTRS\{idVendor\}=="([0-9a-f]{4})"', line)
    }
    assert vendors == {"0403", "10c4", "1a86"}  # FTDI, Silicon Labs, WCH
    for line in _active_lines():
        for products in re.findall(r'ATTRS\{idProduct\}=="([^"]+)"', line):
            assert all(re.fullmatch(r"[0-9a-f]{4}", p) for p in products.split("|")), products


def test_rule_ends_at_its_label() -> None:
    """Every GOTO names the one LABEL, so a non-tracker tty skips the whole file."""
    text = RULE.read_text()
    gotos = set(re.findall(r'GOTO="([^"]+)"', text))
    labels = re.findall(r'^LABEL="([^"]+)"', text, flags=re.M)
    assert gotos == set(labels) == {"pulsegate_trackers_end"}
    assert _active_lines()[-1] == 'LABEL="pulsegate_trackers_end"'
