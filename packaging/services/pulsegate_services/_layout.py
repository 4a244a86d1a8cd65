"""Where the service script keeps its state, and where it finds its inputs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_SCRIPT_DIR = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Layout:
    """Paths shared by every server the script manages.

    Attributes:
        repo_root: The checkout the script belongs to.
        state_dir: ``<repo>/.state/services``; git-ignored, wiped by ``make clean``.
        packaging_dir: ``<repo>/packaging``, holding the apt list and the Cassandra pom.
    """

    repo_root: Path
    state_dir: Path
    packaging_dir: Path

    @property
    def apt_packages_file(self) -> Path:
        return self.packaging_dir / "services" / "apt-packages.txt"

    @property
    def cassandra_pom(self) -> Path:
        return self.packaging_dir / "cassandra" / "pom.xml"

    def server_dir(self, name: str) -> Path:
        """Return (and create) the state directory of one server."""
        path = self.state_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def venv_python(self) -> Path:
        """The repo's virtualenv interpreter, which has pika and cassandra-driver."""
        return self.repo_root / ".venv" / "bin" / "python"


def default_layout() -> Layout:
    """The layout of the checkout this script lives in.

    ``PULSEGATE_SERVICES_STATE_DIR`` moves the state elsewhere (e.g. a tmpfs);
    it is read here and nowhere else.
    """
    repo_root = _SCRIPT_DIR.parent.parent
    state_dir = Path(
        os.environ.get("PULSEGATE_SERVICES_STATE_DIR", repo_root / ".state" / "services")
    ).resolve()
    return Layout(repo_root=repo_root, state_dir=state_dir, packaging_dir=repo_root / "packaging")
