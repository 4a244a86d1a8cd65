"""The example configs in packaging/config load with the real loaders, cover every
key the settings classes have, hold the built-in defaults and comment every key."""

from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from pathlib import Path

import pytest

import central.settings
import gateway.settings

PACKAGING = Path(__file__).resolve().parents[2] / "packaging"

#: (example file, its settings class, its loader, keys whose packaged value
#: deliberately differs from the built-in default, and the packaged value).
EXAMPLES = {
    "gateway": (
        PACKAGING / "config" / "gateway.toml",
        gateway.settings.GatewaySettings,
        gateway.settings.load_settings,
        {
            ("gateway", "state_dir"): Path("/var/lib/pulsegate"),
            ("serial", "missing_port_at_start"): "wait",
        },
    ),
    "central": (
        PACKAGING / "config" / "central.toml",
        central.settings.CentralSettings,
        central.settings.load_settings,
        {("central", "state_dir"): Path("/var/lib/pulsegate-central")},
    ),
}

#: Keys whose default TOML cannot write (None) or that depend on the machine.
MACHINE_DEPENDENT_DEFAULTS = {("gateway", "id")}

_SECTION = re.compile(r"^\[([A-Za-z0-9_.]+)\]\s*(#.*)?$")
_ACTIVE_KEY = re.compile(r"^([A-Za-z0-9_]+)\s*=")
_COMMENTED_KEY = re.compile(r"^#\s?([A-Za-z0-9_]+)\s*=")


@dataclasses.dataclass
class KeyLine:
    section: str
    key: str
    active: bool
    documented: bool


def _key_lines(text: str) -> list[KeyLine]:
    """Every assignment in the file, active or commented out, with its section.

    A key counts as documented when a comment line sits above it, possibly
    across a run of sibling assignments (one comment may explain a pair).
    """
    found: list[KeyLine] = []
    section = ""
    block: list[str] = []  # the lines since the last blank line or header
    for raw in text.splitlines():
        line = raw.strip()
        header = _SECTION.match(line)
        if not line or header:
            block = []
            if header:
                # The entries of a sub-table like [incidents.priority_matrix]
                # are one key's value: its comment sits above the header.
                section = header.group(1) if "." not in header.group(1) else ""
            continue
        active, commented = _ACTIVE_KEY.match(line), _COMMENTED_KEY.match(line)
        if (active or commented) and section:
            comments = [b for b in block if b.startswith("#") and not _COMMENTED_KEY.match(b)]
            found.append(
                KeyLine(section, (active or commented).group(1), bool(active), bool(comments))
            )
        block.append(line)
    return found


def _sections(settings_cls: type) -> dict[str, type]:
    hints = typing.get_type_hints(settings_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(settings_cls)}


@pytest.mark.parametrize("part", sorted(EXAMPLES))
def test_example_loads_with_the_real_loader(part: str, clean_env: None) -> None:
    """The loader accepts the file, and every section in it is one the loader reads."""
    path, settings_cls, load, overrides = EXAMPLES[part]

    settings = load(path)

    # load_config silently skips sections that belong to another part; a
    # section of the example must never be skipped like that.
    in_file = set(tomllib.loads(path.read_text()))
    assert in_file <= set(_sections(settings_cls)), (
        f"sections the loader ignores: {in_file - set(_sections(settings_cls))}"
    )
    for (section, key), packaged in overrides.items():
        assert getattr(getattr(settings, section), key) == packaged


@pytest.mark.parametrize("part", sorted(EXAMPLES))
def test_example_holds_the_builtin_defaults(part: str, clean_env: None) -> None:
    """Apart from the listed packaged paths, loading the example changes no default."""
    path, settings_cls, load, overrides = EXAMPLES[part]
    loaded, defaults = load(path), settings_cls()

    differences = []
    for section in _sections(settings_cls):
        for field in dataclasses.fields(getattr(defaults, section)):
            key = (section, field.name)
            got, default = (
                getattr(getattr(loaded, section), field.name),
                getattr(getattr(defaults, section), field.name),
            )
            if key not in overrides and got != default:
                differences.append(f"{section}.{field.name}: example {got!r}, default {default!r}")
    assert differences == []


@pytest.mark.parametrize("part", sorted(EXAMPLES))
def test_example_shows_every_key(part: str) -> None:
    """Each key of each settings class appears in the example, active or commented out."""
    path, settings_cls, _load, _overrides = EXAMPLES[part]
    lines = _key_lines(path.read_text())
    shown = {(k.section, k.key) for k in lines}

    expected = {
        (section, f.name)
        for section, cls in _sections(settings_cls).items()
        for f in dataclasses.fields(cls)
    }
    # Sub-tables ([incidents.priority_matrix]) are values of keys of their own.
    sub_tables = {
        (s, k)
        for s, table in tomllib.loads(path.read_text()).items()
        for k, v in table.items()
        if isinstance(v, dict)
    }
    assert sorted(expected - shown - sub_tables) == [], "keys missing from the example"
    assert sorted(shown - expected) == [], "keys the settings classes do not have"


@pytest.mark.parametrize("part", sorted(EXAMPLES))
def test_only_unwritable_defaults_are_commented_out(part: str) -> None:
    """A commented-out key is one whose default TOML cannot spell (None, or the host name)."""
    path, settings_cls, _load, _overrides = EXAMPLES[part]
    defaults = settings_cls()

    for line in _key_lines(path.read_text()):
        if line.active or (line.section, line.key) not in _all_keys(settings_cls):
            continue  # active, or an example inside a comment's prose
        default = getattr(getattr(defaults, line.section), line.key)
        assert default is None or (line.section, line.key) in MACHINE_DEPENDENT_DEFAULTS, (
            f"{line.section}.{line.key} is commented out but has the writable default {default!r}"
        )


def _all_keys(settings_cls: type) -> set[tuple[str, str]]:
    return {
        (s, f.name) for s, cls in _sections(settings_cls).items() for f in dataclasses.fields(cls)
    }


@pytest.mark.parametrize("part", sorted(EXAMPLES))
def test_every_key_has_a_comment(part: str) -> None:
    """Each key has a comment above it (one comment may cover a run of related keys)."""
    path, *_ = EXAMPLES[part]
    undocumented = [
        f"{k.section}.{k.key}" for k in _key_lines(path.read_text()) if not k.documented
    ]
    assert undocumented == []


def test_key_scanner_sees_comments_and_commented_keys() -> None:
    """The scanner the tests above rely on: sections, commented keys, documentation."""
    text = "[a]\n# explains x and y\nx = 1\n# y = 2\nz = 3\n\nw = 4\n[a.sub]\nq = 5\n[b]\nr = 6\n"
    got = [(k.section, k.key, k.active, k.documented) for k in _key_lines(text)]
    assert got == [
        ("a", "x", True, True),
        ("a", "y", False, True),
        ("a", "z", True, True),
        ("a", "w", True, False),
        ("b", "r", True, False),
    ]


def test_environment_overrides_the_packaged_paths(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The systemd units and the chart rely on PULSEGATE_* beating the file."""
    monkeypatch.setenv("PULSEGATE_CENTRAL_STATE_DIR", "/srv/elsewhere")
    monkeypatch.setenv("PULSEGATE_INGEST_METRICS_ADDRESS", "127.0.0.1:9470")

    settings = central.settings.load_settings(EXAMPLES["central"][0])

    assert settings.central.state_dir == Path("/srv/elsewhere")
    assert settings.ingest.metrics_address == "127.0.0.1:9470"
