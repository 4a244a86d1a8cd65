"""Install the Debian packages the test suite needs, once.

Runs on a fresh Debian machine as root with no init system: package
post-install scripts would try to start rabbitmq-server and prometheus, so a
``policy-rc.d`` that forbids starting services is in place for the install and
removed afterwards (unless one was already there).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ._errors import ServicesError

logger = logging.getLogger(__name__)

_POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
# Exit code 101 tells invoke-rc.d "action forbidden by policy".
_POLICY_FORBID_ALL = "#!/bin/sh\n# Written by pulsegate-services for one apt run.\nexit 101\n"
# Another engineer's apt run may hold the dpkg lock; wait rather than fail.
_DPKG_LOCK_TIMEOUT_S = 600


def read_package_list(path: Path) -> list[str]:
    """Return the package names in ``path``, skipping blanks and # comments."""
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        name = line.split("#", 1)[0].strip()
        if name:
            names.append(name)
    return names


def missing_packages(names: list[str]) -> list[str]:
    """Return the packages of ``names`` that dpkg does not list as installed."""
    if shutil.which("dpkg-query") is None:
        raise ServicesError(
            "dpkg-query not found: pulsegate-services installs packages only on Debian or Ubuntu"
        )
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *names],
        capture_output=True,
        text=True,
        check=False,
    )
    # Unknown packages go to stderr and are simply absent from stdout.
    installed = {
        line.split()[0].split(":")[0]
        for line in result.stdout.splitlines()
        if line.endswith(" installed")
    }
    return [name for name in names if name not in installed]


def install_packages(package_file: Path) -> list[str]:
    """Install what is missing from ``package_file``; return what was installed.

    Raises:
        ServicesError: Not root, or apt-get failed (its last output lines are logged).
    """
    missing = missing_packages(read_package_list(package_file))
    if not missing:
        return []
    if os.geteuid() != 0:
        raise ServicesError(
            f"Debian packages missing: {' '.join(missing)}; run `pulsegate-services install` as root"
        )
    logger.info("installing Debian packages: %s (takes a minute or two)", " ".join(missing))
    with _services_forbidden_to_start():
        _apt_get("update")
        _apt_get("install", "-y", "--no-install-recommends", *missing)
    still_missing = missing_packages(missing)
    if still_missing:
        raise ServicesError(
            f"apt-get finished but these are still not installed: {' '.join(still_missing)}"
        )
    return missing


def _apt_get(*args: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "NEEDRESTART_MODE": "a"}
    command = [
        "apt-get",
        "-q",
        "-o",
        f"DPkg::Lock::Timeout={_DPKG_LOCK_TIMEOUT_S}",
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
        *args,
    ]
    result = subprocess.run(
        command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-15:]
        for line in tail:
            logger.error("apt-get: %s", line)
        raise ServicesError(
            f"`apt-get {' '.join(args[:1])}` failed with exit code {result.returncode} (output above)"
        )


@contextmanager
def _services_forbidden_to_start() -> Iterator[None]:
    """Keep post-install scripts from starting daemons while apt runs.

    A policy that already forbids everything (container images ship one) is
    left alone; any other policy is set aside and put back afterwards.
    """
    original = _POLICY_RC_D.read_bytes() if _POLICY_RC_D.exists() else None
    if original is not None and b"exit 101" in original:
        yield
        return
    _POLICY_RC_D.write_text(_POLICY_FORBID_ALL, encoding="utf-8")
    _POLICY_RC_D.chmod(0o755)
    try:
        yield
    finally:
        if original is None:
            _POLICY_RC_D.unlink(missing_ok=True)
        else:
            _POLICY_RC_D.write_bytes(original)
