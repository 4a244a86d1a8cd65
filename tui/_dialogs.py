"""Modal dialogs: confirm, export path and progress, help."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, ProgressBar, Static

from tui._display import count
from tui.errors import ControlError

__all__ = ["ConfirmDialog", "ExportPathDialog", "ExportProgressDialog", "HelpScreen"]


class ConfirmDialog(ModalScreen[bool]):
    """Ask before a slow or disruptive action; ``y``/``enter`` confirms, ``n``/``escape`` cancels."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, confirm_label: str = "Yes") -> None:
        super().__init__()
        self.question = question
        self.confirm_label = confirm_label

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, classes="question")
            with Horizontal(classes="buttons"):
                yield Button(f"{self.confirm_label} [y]", variant="warning", id="yes")
                yield Button("Cancel [n]", id="no")

    def on_mount(self) -> None:
        self.query_one("#yes", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        """Close with the answer."""
        self.dismiss(yes)


class ExportPathDialog(ModalScreen[Path | None]):
    """Ask where to write the bundle, e.g. a USB stick's mount point."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, suggested: str) -> None:
        super().__init__()
        self.suggested = suggested

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Export the buffered records to a bundle file (e.g. on a USB stick):")
            yield Input(self.suggested, placeholder="/media/usb/pulsegate.bundle", id="export-path")
            yield Static("", id="export-path-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Export [enter]", variant="primary", id="ok")
                yield Button("Cancel [esc]", id="cancel")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._submit(event.value)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self._submit(self.query_one(Input).value)
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        """Close without exporting."""
        self.dismiss(None)

    def _submit(self, value: str) -> None:
        error = self.query_one("#export-path-error", Static)
        text = value.strip()
        if not text:
            error.update("type a file path, e.g. /media/usb/pulsegate.bundle")
            return
        path = Path(text).expanduser()
        if path.is_dir():
            error.update(f"{str(path)!r} is a folder; give a file name inside it")
            return
        if not path.parent.is_dir():
            error.update(f"no folder {str(path.parent)!r}: is the USB stick mounted?")
            return
        self.dismiss(path)


class ExportProgressDialog(ModalScreen[dict[str, Any] | None]):
    """Runs ``export`` and shows the daemon's progress lines; dismisses with the result or None."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.progress_lines = 0
        """How many progress lines arrived (tests check the bar was fed)."""

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Exporting to {self.path} …")
            yield ProgressBar(total=None, show_eta=True, id="export-progress")
            yield Static("waiting for the gateway …", id="export-count")

    def on_mount(self) -> None:
        self.run_worker(self._export(), exclusive=True, group="export")

    def _on_progress(self, done: int, total: int) -> None:
        self.progress_lines += 1
        self.query_one(ProgressBar).update(total=max(total, 1), progress=done)
        self.query_one("#export-count", Static).update(f"{count(done)} of {count(total)} records")

    async def _export(self) -> None:
        feed = self.app.feed
        try:
            result = await feed.run_action("export", {"path": str(self.path)}, on_progress=self._on_progress)
        except ControlError as exc:
            self.app.notify(str(exc), title="export failed", severity="error", timeout=10)
            self.dismiss(None)
            return
        self.dismiss(result)


#: (keys, where, what) rows of the help screen.
HELP_KEYS: tuple[tuple[str, str, str], ...] = (
    ("enter d", "overview", "open the selected tracker's detail"),
    ("i", "anywhere", "incidents and cues from central"),
    ("p", "anywhere", "pause the uplink (asks first)"),
    ("r", "anywhere", "resume the uplink"),
    ("s", "anywhere", "sync now: wake the uplink"),
    ("e", "anywhere", "export a bundle to a path (asks first)"),
    ("t", "overview, detail", "test cue to the selected tracker"),
    ("b", "anywhere", "rescan Bluetooth for the AirPods"),
    ("a", "overview", "acknowledge the selected / oldest new alarm"),
    ("1 2 3", "detail", "records, gaps, quarantine"),
    ("tab", "anywhere", "move between tables"),
    ("esc", "detail, incidents", "back"),
    ("? / q", "", "this help / quit"),
)

HELP_INTRO = (
    "Refreshes every second from the gateway daemon's control socket. With the daemon "
    "down: a read-only view from its database, actions dimmed, reconnects by itself."
)
HELP_COLUMNS = ("recv received · buf waiting for the uplink · gaps seq numbers missing · "
                "dup duplicates dropped · quar frames quarantined · seen since last frame")


def _help_table() -> Table:
    table = Table(box=None, show_header=False, padding=(0, 1), expand=True)
    table.add_column(style="bold yellow", no_wrap=True)
    table.add_column(style="dim", no_wrap=True)
    table.add_column(ratio=1)
    for row in HELP_KEYS:
        table.add_row(*row)
    return table


class HelpScreen(ModalScreen[None]):
    """Keys and what the columns mean."""

    BINDINGS = [Binding("escape,question_mark,q", "dismiss(None)", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog help"):
            yield Static(Text("Pulsegate terminal UI · esc closes", style="bold"))
            yield Static(HELP_INTRO, classes="help-intro")
            yield Static(_help_table())
            yield Static(Text(HELP_COLUMNS, style="dim"), classes="help-columns")
