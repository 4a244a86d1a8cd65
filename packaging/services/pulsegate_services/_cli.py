"""The command line: ``pulsegate-services install|start|stop|restart|status|reset|rabbitmqctl``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict

from . import _server
from ._apt import install_packages
from ._cassandra import Cassandra
from ._errors import ServicesError
from ._layout import Layout, default_layout
from ._rabbitmq import RabbitMQ
from ._server import ManagedServer

logger = logging.getLogger(__name__)

SERVER_NAMES = ("rabbitmq", "cassandra")
# Exit code of `status` when a server is not running (the LSB init-script convention).
_EXIT_NOT_RUNNING = 3


def _servers(layout: Layout, names: list[str]) -> list[ManagedServer]:
    classes = {"rabbitmq": RabbitMQ, "cassandra": Cassandra}
    return [classes[name](layout) for name in (names or SERVER_NAMES)]


def cmd_install(layout: Layout, names: list[str]) -> int:
    """Install the Debian packages, then Cassandra's jars and driver check if Cassandra is wanted."""
    installed = install_packages(layout.apt_packages_file)
    if installed:
        print(f"installed Debian packages: {' '.join(installed)}")
    if "cassandra" in (names or SERVER_NAMES):
        Cassandra(layout).assemble_jars()
        check_cassandra_driver()
    return 0


def check_cassandra_driver() -> None:
    """Fail early if cassandra-driver cannot load a connection class on this Python.

    The driver tries gevent, eventlet, libev, then asyncore; a source build
    without libev on Python 3.12+ (no asyncore) has none, and ``import
    cassandra.cluster`` itself fails. Skipped when running without the venv.
    """
    try:
        import cassandra  # noqa: F401 - only whether it is installed
    except ImportError:
        logger.info("cassandra-driver not installed in %s; skipping its check", sys.executable)
        return
    try:
        from cassandra.cluster import Cluster
    except Exception as error:  # DependencyException, or an ImportError from a broken wheel
        raise ServicesError(
            f"cassandra-driver cannot load a connection class ({error}); install its binary wheel "
            "(pip install --only-binary cassandra-driver cassandra-driver) or libev-dev before building it"
        ) from error
    logger.debug("cassandra-driver connection class: %s", Cluster.connection_class.__name__)


def cmd_start(layout: Layout, names: list[str], timeout_s: float | None) -> int:
    """Launch every requested server at once, then wait for each to answer."""
    cmd_install(layout, names)
    servers = _servers(layout, names)
    launched = []
    for server in servers:
        pgid, already = _server.launch(server)
        launched.append((server, pgid, already, time.monotonic()))
    for server, pgid, already, launched_at in launched:
        if already and server.answers():
            print(
                f"{server.name}: already up at {server.address} (pid {pgid}; logs in {server.log_dir})"
            )
            continue
        remaining_s = (timeout_s or server.start_timeout_s) - (time.monotonic() - launched_at)
        _server.wait_until_answering(server, pgid, max(remaining_s, 1.0))
        print(
            f"{server.name}: up at {server.address} in {time.monotonic() - launched_at:.1f} s "
            f"(pid {pgid}; logs in {server.log_dir})"
        )
    return 0


def cmd_stop(layout: Layout, names: list[str], hard: bool) -> int:
    """Stop the requested servers and wait until each is really down."""
    for server in _servers(layout, names):
        was_running, took_s = _server.stop(server, hard=hard)
        if was_running:
            how = "killed" if hard else "stopped"
            print(f"{server.name}: {how} in {took_s:.1f} s")
        else:
            print(f"{server.name}: already stopped")
    return 0


def cmd_status(layout: Layout, names: list[str], as_json: bool) -> int:
    """Print one line (or one JSON object) per server; exit 3 if any is not running."""
    states = [_server.state_of(server) for server in _servers(layout, names)]
    if as_json:
        print(json.dumps({state.name: asdict(state) for state in states}, indent=2))
    else:
        for state in states:
            pid = f" (pid {state.pid})" if state.pid else ""
            print(f"{state.name}: {state.state}{pid} at {state.address}; logs in {state.log_dir}")
    return 0 if all(state.state == "running" for state in states) else _EXIT_NOT_RUNNING


def cmd_rabbitmqctl(layout: Layout, args: list[str]) -> int:
    """Run rabbitmqctl against the local node (its cookie and node name are this script's)."""
    argv, extra_env = RabbitMQ(layout).ctl_command(args)
    return subprocess.run(argv, env={**os.environ, **extra_env}, check=False).returncode


def cmd_reset(layout: Layout, names: list[str]) -> int:
    """Stop the requested servers and delete their data (queues, keyspaces)."""
    for server in _servers(layout, names):
        _server.stop(server)
        server.wipe()
        print(f"{server.name}: stopped and wiped {server.home}")
    return 0


def _add_server_names(command: argparse.ArgumentParser) -> None:
    # No argparse `choices`: on 3.11 it rejects an empty `*` list; main() checks the names.
    command.add_argument(
        "servers", nargs="*", metavar="SERVER", help="rabbitmq and/or cassandra (default: both)"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pulsegate-services",
        description="Run the real RabbitMQ and Cassandra servers that development, tests and CI use, on loopback.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every step")
    commands = parser.add_subparsers(dest="command", required=True)
    install = commands.add_parser(
        "install", help="install the Debian packages and Cassandra's jars (root)"
    )
    _add_server_names(install)
    start = commands.add_parser("start", help="install, start, and wait until each server answers")
    _add_server_names(start)
    start.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="give up waiting after this long"
    )
    for command, help_text in (
        ("stop", "stop and wait until each server is down"),
        ("restart", "stop, then start"),
    ):
        sub = commands.add_parser(command, help=help_text)
        _add_server_names(sub)
        sub.add_argument(
            "--hard", action="store_true", help="SIGKILL instead of a clean shutdown (a crash)"
        )
        if command == "restart":
            sub.add_argument(
                "--timeout", type=float, metavar="SECONDS", help="give up waiting after this long"
            )
    status = commands.add_parser(
        "status", help="say whether each server runs and answers (exit 3 if not)"
    )
    _add_server_names(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    reset = commands.add_parser("reset", help="stop the servers and delete their data")
    _add_server_names(reset)
    ctl = commands.add_parser(
        "rabbitmqctl", help="run rabbitmqctl against the local node, e.g. `list_queues`"
    )
    ctl.add_argument("ctl_args", nargs=argparse.REMAINDER, help="arguments for rabbitmqctl")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; an expected failure prints one line and exits 1."""
    parser = _parser()
    args = parser.parse_args(argv)
    unknown = [name for name in getattr(args, "servers", []) if name not in SERVER_NAMES]
    if unknown:
        parser.error(f"unknown server {unknown[0]!r}; choose from {', '.join(SERVER_NAMES)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="pulsegate-services: %(message)s",
        stream=sys.stderr,
    )
    layout = default_layout()
    names = list(dict.fromkeys(getattr(args, "servers", [])))
    try:
        if args.command == "install":
            return cmd_install(layout, names)
        if args.command == "start":
            return cmd_start(layout, names, args.timeout)
        if args.command == "stop":
            return cmd_stop(layout, names, args.hard)
        if args.command == "restart":
            cmd_stop(layout, names, args.hard)
            return cmd_start(layout, names, args.timeout)
        if args.command == "status":
            return cmd_status(layout, names, args.json)
        if args.command == "rabbitmqctl":
            return cmd_rabbitmqctl(layout, args.ctl_args)
        return cmd_reset(layout, names)
    except ServicesError as error:
        print(f"pulsegate-services: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pulsegate-services: interrupted", file=sys.stderr)
        return 130
