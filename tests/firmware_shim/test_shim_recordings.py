"""Recording readers against facts established by other tools.

Sample counts and time spans come from the table in ``tests/fixtures/PROVENANCE.md``
(counted with fitdecode, fitparse and gpxpy in a separate environment); the
per-record values come from python-fitparse's expected CSVs.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from firmware_shim import Recording, read_recording

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RECORDINGS = FIXTURES / "recordings"
EXPECTED = RECORDINGS / "expected"
SEMICIRCLE_DEG = 180 / 2**31
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Recordings this large take seconds each to parse; ``-m "not slow"`` skips them.
SLOW_SAMPLES = 5000


@dataclass(frozen=True)
class TableRow:
    samples: int
    first_time: str
    last_time: str


def provenance_table() -> dict[str, TableRow]:
    """Parse the parse-check table of PROVENANCE.md, by its header, into rows keyed by relative path."""
    lines = (FIXTURES / "PROVENANCE.md").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| file | records |"))
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = dict(
            zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=True)
        )
        count = re.fullmatch(r"(\d+) (record msgs|trackpoints)", cells["records"])
        span = re.fullmatch(r"(\S+) -> (\S+) \(.*\)", cells["time span"])
        assert count and span, f"unexpected PROVENANCE.md row: {line}"
        rows[cells["file"].strip("`")] = TableRow(int(count.group(1)), span.group(1), span.group(2))
    return rows


TABLE = provenance_table()


@cache
def recording(relative: str) -> Recording:
    return read_recording(RECORDINGS / relative)


def _micros(iso: str) -> int:
    return (datetime.fromisoformat(iso) - _EPOCH) // timedelta(microseconds=1)


def test_the_table_lists_every_recording_on_disk() -> None:
    on_disk = {
        p.relative_to(RECORDINGS).as_posix()
        for kind in ("fit", "gpx", "tcx")
        for p in (RECORDINGS / kind).iterdir()
    }
    assert set(TABLE) == on_disk
    assert len(TABLE) == 28


@pytest.mark.parametrize(
    "relative",
    [
        pytest.param(rel, marks=[pytest.mark.slow] if row.samples > SLOW_SAMPLES else [])
        for rel, row in TABLE.items()
    ],
)
def test_sample_count_and_time_span_match_provenance(relative: str) -> None:
    row = TABLE[relative]
    samples = recording(relative).samples
    assert len(samples) == row.samples
    assert samples[0]["timestamp_us"] == _micros(row.first_time)
    assert samples[-1]["timestamp_us"] == _micros(row.last_time)


# --- per-record values against python-fitparse's CSVs ----------------------------

#: The CSVs print local time with a zone abbreviation; these are the ones they use.
_ZONES = {"PDT": timezone(timedelta(hours=-7)), "PST": timezone(timedelta(hours=-8))}
#: CSV column -> (sample field, factor from CSV units to the sample's, tolerance in the sample's units).
#: Each tolerance is one step of the FIT field's own resolution (scale), so only a
#: real misreading fails: speed 1/1000 m/s, distance 1/100 m, altitude 1/5 m,
#: position one semicircle; heart rate, cadence and temperature are integers.
_COLUMNS: dict[str, tuple[str, float, float]] = {
    "heart_rate": ("heart_rate_bpm", 1, 0),
    "cadence": ("cadence_rpm", 1, 0),
    "speed": ("speed_m_s", 1, 0.001),
    "distance": ("distance_m", 1, 0.01),
    "position_lat": ("latitude_deg", SEMICIRCLE_DEG, SEMICIRCLE_DEG),
    "position_long": ("longitude_deg", SEMICIRCLE_DEG, SEMICIRCLE_DEG),
    "altitude": ("altitude_m", 1, 0.2),
    "temperature": ("temperature_c", 1, 0),
}


def _csv_time_us(text: str) -> int:
    """``Sun Sep 25 06:00:22 PDT 2011`` -> microseconds since the epoch."""
    weekday, month, day, clock, zone, year = text.split()
    local = datetime.strptime(f"{day} {month} {year} {clock}", "%d %b %Y %H:%M:%S")
    moment = local.replace(tzinfo=_ZONES[zone])
    assert moment.strftime("%a") == weekday
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _expected_rows(name: str) -> list[dict[str, str]]:
    with (EXPECTED / f"{name}-records.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert set(rows[0]) == {"timestamp", *_COLUMNS}
    return rows


@pytest.mark.parametrize(
    "name",
    [
        "fitparse__garmin-fenix-5-run",
        "fitparse__garmin-edge-820-bike",
        pytest.param("fitparse__garmin-edge-500-activity", marks=pytest.mark.slow),
    ],
)
def test_fit_values_match_fitparse_expected_csv(name: str) -> None:
    rows = _expected_rows(name)
    samples = recording(f"fit/{name}.fit").samples
    assert len(samples) == len(rows)
    last_valid: dict[str, Any] = {}
    carried = 0
    for index, (row, sample) in enumerate(zip(rows, samples, strict=True)):
        assert sample["timestamp_us"] == _csv_time_us(row["timestamp"]), index
        for column, (field, factor, tolerance) in _COLUMNS.items():
            expected = float(row[column]) * factor
            value = sample[field]
            if value is None:
                # The device marked the field invalid in this record. The CSV
                # repeats the last valid value there; our reader says "no
                # reading", which is the honest answer for the wire.
                value = last_valid.get(field)
                carried += 1
            else:
                last_valid[field] = value
            assert value == pytest.approx(expected, abs=tolerance + 1e-9), (index, column, row)
    if name.endswith("edge-500-activity"):
        # 121 records without cadence and 9 without a GPS fix (latitude and longitude each).
        assert carried == 121 + 2 * 9
