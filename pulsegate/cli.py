"""``pulsegate``: one command with a group per part, and the demo."""

from __future__ import annotations

import logging
import os
import sys

import click

from central.cli import central
from firmware_shim.cli import shim
from gateway.cli import gateway
from pulsegate.config import ConfigError
from tui.cli import tui

#: Failures a user can cause and fix: printed as one line, never a traceback.
_EXPECTED_ERRORS: tuple[type[BaseException], ...] = (ConfigError,)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """Pulsegate: an edge gateway for fitness-tracker fleets, and its central services."""
    level = os.environ.get("PULSEGATE_LOG_LEVEL") or ("DEBUG" if verbose > 1 else "INFO" if verbose else "WARNING")
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


@cli.command()
@click.option("--state-dir", type=click.Path(file_okay=False), default=".state/demo", show_default=True,
              help="Where the demo keeps its files; an earlier demo's folder is wiped, any other non-empty folder refused.")
@click.option("--recordings", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder of FIT/GPX/TCX recordings to replay [default: the shipped fixtures].")
@click.option("--keep-running", is_flag=True,
              help="Keep the demo's gateway running at the end (for `pulsegate tui`) until Ctrl-C.")
def demo(state_dir: str, recordings: str | None, keep_running: bool) -> None:
    """Replay every recording into a gateway, then carry its bundle to central."""
    from pulsegate.demo import run_demo

    sys.exit(run_demo(state_dir, recordings, keep_running=keep_running))


cli.add_command(shim)
cli.add_command(gateway)
cli.add_command(central)
cli.add_command(tui)


#: Exit codes, the argparse convention: the fix is in the command line or the
#: configuration (nothing was attempted), or the run itself failed (a server
#: unreachable, input refused); 3 is the replay's own "gave up", 130 Ctrl-C.
EXIT_RUNTIME_FAILURE = 1
EXIT_USAGE_OR_CONFIG = 2


def _exit_code(exc: BaseException) -> int:
    """2 when ``exc`` says the command line or configuration is wrong, else 1."""
    from central.store import StoreError, StoreUnavailable
    from gateway.state_reader import StateDirError
    from gateway.uplink import UplinkConfigError

    # central incidents wraps its errors in ClickException; judge the one it wraps.
    cause = exc.__context__ if isinstance(exc, click.ClickException) and exc.__context__ else exc
    if isinstance(cause, StoreUnavailable):
        return EXIT_RUNTIME_FAILURE
    if isinstance(cause, (ConfigError, StoreError, StateDirError, UplinkConfigError)):
        return EXIT_USAGE_OR_CONFIG
    return EXIT_RUNTIME_FAILURE


def main() -> None:
    """Console entry point: expected failures become one line on stderr.

    Exit codes: 0 done, 1 the run failed, 2 a usage or configuration error,
    130 interrupted (and 3 from ``shim replay`` when it gave up).
    """
    from central.errors import CentralError
    from firmware_shim.errors import ShimError
    from gateway.errors import GatewayError

    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        exc.show()  # with the usage line: the fix is in the command line itself
        sys.exit(EXIT_USAGE_OR_CONFIG)
    except click.ClickException as exc:
        click.echo(f"pulsegate: error: {exc.format_message()}", err=True)
        sys.exit(_exit_code(exc))
    except (ConfigError, ShimError, GatewayError, CentralError) as exc:
        click.echo(f"pulsegate: error: {exc}", err=True)
        sys.exit(_exit_code(exc))
    except KeyboardInterrupt:
        sys.exit(130)
