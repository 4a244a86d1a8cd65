"""Decoding Apple proximity-pairing adverts: recorded captures, built payloads, fuzz."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.airpods import AdvertError, AirPodsState, parse_proximity_pairing
from gateway.errors import GatewayError

from ._replay import ADVERTS, advert_bytes

# -- the recorded captures -----------------------------------------------------

#: Phrases in the TSV that assert nothing checkable about our decoder, and why.
NOT_ASSERTED = {
    "-",  # the source says nothing
    "single battery",  # Beats Flex: the reporter names no value
    "never (device shuts off while charging)",  # Beats Flex: behaviour, not an advert value
}
#: Rows the decoder refuses on purpose, so their source's values are not compared.
#: ap23/ap24 are 19-byte counterfeit payloads (CAPod decodes them with a separate
#: fake-device decoder; the gateway ignores fakes rather than trusting fixed values).
REFUSED_ROWS = {"ap23": "short_payload", "ap24": "short_payload"}
PREFIX_ONLY = [i for i, r in ADVERTS.items() if r["completeness"].startswith("prefix-only")]


def _percent(text: str) -> tuple[str, int | None] | None:
    if text in NOT_ASSERTED:
        return None
    if text == "unknown":
        return ("pod", None)
    if match := re.fullmatch(r"headset (\d+)", text):
        return ("single", int(match.group(1)))
    if re.fullmatch(r"\d+", text):
        return ("pod", int(text))
    raise AssertionError(f"unrecognised battery assertion {text!r}: teach the test what it means")


def _flags(text: str, names: tuple[str, ...]) -> dict[str, bool] | None:
    if text in NOT_ASSERTED:
        return None
    pairs = dict(re.findall(r"(\w+)=(yes|no)", text))
    if pairs:
        return {
            name: pairs[key] == "yes"
            for key, name in zip(("L", "R", "case"), names, strict=False)
            if key in pairs
        }
    raise AssertionError(f"unrecognised flag assertion {text!r}")


def expected_values(row: dict[str, str]) -> dict[str, Any]:
    """Translate the TSV's asserted columns into AirPodsState field values."""
    expected: dict[str, Any] = {}
    for column, side in (("left_pct", "left"), ("right_pct", "right"), ("case_pct", "case")):
        value = _percent(row[column])
        if value is not None:
            kind, pct = value
            expected["single_pct" if kind == "single" else f"{side}_pct"] = pct
    charging = row["charging"]
    if charging in ("none", "not charging"):
        names = (
            ("single_charging",)
            if "single_pct" in expected
            else ("left_charging", "right_charging", "case_charging")
        )
        expected.update(dict.fromkeys(names, False))
    elif (
        flags := _flags(charging, ("left_charging", "right_charging", "case_charging"))
    ) is not None:
        expected.update(flags)
    expected.update(_in_ear(row["in_ear"]))
    if match := re.search(
        r"\(0x([0-9A-F]{4})\)|model bytes 0x([0-9A-F]{4})", row["model_per_source"]
    ):
        expected["model_code"] = int(match.group(1) or match.group(2), 16)
    if match := re.search(r"lid byte 0x([0-9a-f]{2})", row["other_fields"]):
        expected["lid_open_counter"] = int(match.group(1), 16)
    if match := re.search(r"colour byte 0x([0-9A-Fa-f]{2})", row["other_fields"]):
        expected["colour_code"] = int(match.group(1), 16)
    return expected


def _in_ear(text: str) -> dict[str, bool]:
    if text in NOT_ASSERTED:
        return {}
    if text.startswith("both in ear") or text.startswith("being worn"):
        return {"left_in_ear": True, "right_in_ear": True}
    if text.startswith("both out of ear") or text.startswith("not reported"):
        return {"left_in_ear": False, "right_in_ear": False}
    if text.startswith("one pod removed"):
        return {"exactly_one_in_ear": True}
    flags = _flags(text, ("left_in_ear", "right_in_ear"))
    assert flags is not None
    return flags


def actual_values(state: AirPodsState) -> dict[str, Any]:
    values = {name: getattr(state, name) for name in AirPodsState.__slots__}
    values["model_code"] = state.model.code
    values["exactly_one_in_ear"] = state.left_in_ear != state.right_in_ear
    return values


@pytest.mark.parametrize(
    "row_id", [i for i in ADVERTS if i not in REFUSED_ROWS and i not in PREFIX_ONLY]
)
def test_full_capture_decodes_to_what_its_source_asserts(row_id: str) -> None:
    """Every complete capture decodes to the values its source asserts, column by column."""
    row = ADVERTS[row_id]
    state = parse_proximity_pairing(advert_bytes(row_id))
    expected = expected_values(row)
    actual = actual_values(state)
    assert {k: actual[k] for k in expected} == expected
    if "(0x" in row["model_per_source"]:  # a model the source names with its code is in our table
        assert state.model.name != "unknown"


@pytest.mark.parametrize("row_id", PREFIX_ONLY)
def test_prefix_only_capture_is_refused_as_truncated_and_decodes_once_completed(
    row_id: str,
) -> None:
    """A prefix-only post is refused; with the omitted 16-byte block restored as zeros it decodes as asserted.

    The decoder never reads bytes 11-26, so zeros there cannot change a value.
    """
    prefix = advert_bytes(row_id)
    with pytest.raises(AdvertError) as caught:
        parse_proximity_pairing(prefix)
    assert caught.value.reason == "truncated"

    completed = prefix + bytes(27 - len(prefix))
    expected = expected_values(ADVERTS[row_id])
    actual = actual_values(parse_proximity_pairing(completed))
    assert expected, "prefix-only rows all assert battery values"
    assert {k: actual[k] for k in expected} == expected


@pytest.mark.parametrize("row_id", sorted(REFUSED_ROWS))
def test_counterfeit_19_byte_payload_is_refused(row_id: str) -> None:
    """The 19-byte fakes raise AdvertError(short_payload), a GatewayError with a one-line message."""
    with pytest.raises(AdvertError) as caught:
        parse_proximity_pairing(advert_bytes(row_id))
    assert caught.value.reason == REFUSED_ROWS[row_id]
    assert isinstance(caught.value, GatewayError)
    assert "\n" not in str(caught.value) and "19" in str(caught.value)


def test_one_pair_seen_from_two_addresses_agrees_after_flip_handling() -> None:
    """ap05/ap06: case and removed pod advertise at once with opposite flip bits; the batteries must agree."""
    case_side = parse_proximity_pairing(advert_bytes("ap05"))
    pod_side = parse_proximity_pairing(advert_bytes("ap06"))
    assert case_side.flipped != pod_side.flipped
    assert (
        (case_side.left_pct, case_side.right_pct)
        == (pod_side.left_pct, pod_side.right_pct)
        == (100, 90)
    )
    assert case_side.case_pct == pod_side.case_pct == 60


def test_edited_capture_pair_each_decodes_to_its_own_assertions() -> None:
    """ap20/ap21 differ in byte 6 only (one was edited); each row's values match its own hex."""
    assert advert_bytes("ap20")[6] == 0xAF and advert_bytes("ap21")[6] == 0xAA
    assert parse_proximity_pairing(advert_bytes("ap20")).right_pct is None
    assert parse_proximity_pairing(advert_bytes("ap21")).right_pct == 100


def test_unconfirmed_model_code_decodes_as_unknown_model() -> None:
    """ap16's model 0x1120 was never identified, so its name is 'unknown' but the pods still decode."""
    state = parse_proximity_pairing(advert_bytes("ap16"))
    assert state.model.code == 0x1120 and state.model.name == "unknown"
    assert (state.left_pct, state.right_pct) == (80, 80)


# -- payloads built from the documented layout ---------------------------------


def build_payload(
    *,
    model: int = 0x0E20,
    left: int | None,
    right: int | None,
    case: int | None,
    left_charging: bool = False,
    right_charging: bool = False,
    case_charging: bool = False,
    left_in_ear: bool = False,
    right_in_ear: bool = False,
    flipped: bool = False,
    lid: int = 0x31,
    colour: int = 0x00,
    trailer: bytes = bytes(16),
) -> bytes:
    """Encode the fields by the byte layout in library-facts.md section 9."""

    def nibble(pct: int | None) -> int:
        return 0xF if pct is None else pct // 10

    first, second = (left, right) if flipped else (right, left)  # high nibble, low nibble
    charge = (0b100 if case_charging else 0) | (
        ((0b10 if left_charging else 0) | (0b01 if right_charging else 0))
        if flipped
        else ((0b01 if left_charging else 0) | (0b10 if right_charging else 0))
    )
    ear = (
        ((0b1000 if left_in_ear else 0) | (0b0010 if right_in_ear else 0))
        if flipped
        else ((0b0010 if left_in_ear else 0) | (0b1000 if right_in_ear else 0))
    )
    status = (0x00 if flipped else 0x20) | ear
    return (
        bytes(
            [
                0x07,
                0x19,
                0x01,
                model >> 8,
                model & 0xFF,
                status,
                nibble(first) << 4 | nibble(second),
                charge << 4 | nibble(case),
                lid,
                colour,
                0x00,
            ]
        )
        + trailer
    )


pcts = st.one_of(st.none(), st.integers(0, 10).map(lambda n: n * 10))


@given(
    left=pcts,
    right=pcts,
    case=pcts,
    flags=st.lists(st.booleans(), min_size=6, max_size=6),
    model=st.sampled_from([0x0220, 0x0F20, 0x1320, 0x0E20, 0x1420, 0x7720]),
    lid=st.integers(0, 255),
)
def test_built_two_pod_payload_decodes_back_to_its_fields(
    left: int | None, right: int | None, case: int | None, flags: list[bool], model: int, lid: int
) -> None:
    """Any two-pod status encoded by the documented layout decodes to the same fields."""
    lch, rch, cch, lear, rear, flipped = flags
    state = parse_proximity_pairing(
        build_payload(
            model=model,
            left=left,
            right=right,
            case=case,
            left_charging=lch,
            right_charging=rch,
            case_charging=cch,
            left_in_ear=lear,
            right_in_ear=rear,
            flipped=flipped,
            lid=lid,
        )
    )
    assert (state.left_pct, state.right_pct, state.case_pct) == (left, right, case)
    assert (state.left_charging, state.right_charging, state.case_charging) == (lch, rch, cch)
    assert (state.left_in_ear, state.right_in_ear, state.flipped) == (lear, rear, flipped)
    assert state.any_in_ear == (lear or rear)
    assert state.model.code == model and state.lid_open_counter == lid


def test_flipped_payload_swaps_left_and_right_halves() -> None:
    """The same bytes read with the flip bit set and clear give mirrored left/right values."""
    upright = build_payload(left=30, right=70, case=None, left_charging=True, left_in_ear=True)
    flipped = bytearray(upright)
    flipped[5] &= ~0x20  # clear bit 5: flipped
    a, b = parse_proximity_pairing(upright), parse_proximity_pairing(bytes(flipped))
    assert (a.left_pct, a.right_pct, a.left_charging, a.right_charging) == (30, 70, True, False)
    assert (b.left_pct, b.right_pct, b.left_charging, b.right_charging) == (70, 30, False, True)
    # in-ear bit 1 is "left" upright and "right" flipped
    assert (a.left_in_ear, a.right_in_ear) == (True, False) and (b.left_in_ear, b.right_in_ear) == (
        False,
        True,
    )


@pytest.mark.parametrize("nibble", [11, 12, 13, 14, 15])
def test_battery_nibble_above_ten_means_no_data(nibble: int) -> None:
    payload = bytearray(build_payload(left=50, right=50, case=50))
    payload[7] = (payload[7] & 0xF0) | nibble
    assert parse_proximity_pairing(bytes(payload)).case_pct is None


def test_headset_battery_is_the_low_nibble_whatever_the_flip_bit() -> None:
    """AirPods Max: one battery in the low nibble; bit 5 of the status means worn."""
    payload = bytearray(build_payload(model=0x0A20, left=None, right=None, case=None))
    payload[6] = 0x07
    worn = parse_proximity_pairing(bytes(payload))
    payload[5] &= ~0x20
    off = parse_proximity_pairing(bytes(payload))
    assert worn.single_pct == off.single_pct == 70
    assert worn.any_in_ear and not off.any_in_ear
    assert worn.left_pct is worn.right_pct is worn.case_pct is None


def test_trailing_continuity_message_is_ignored() -> None:
    """Bytes after the 27-byte message (another continuity TLV) do not change the result."""
    base = build_payload(left=40, right=60, case=80)
    assert parse_proximity_pairing(base + bytes.fromhex("1005031c")) == parse_proximity_pairing(
        base
    )


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "truncated"),
        (b"\x07", "truncated"),
        (bytes.fromhex("100503180c1a6e"), "not_proximity_pairing"),  # an iPhone's "nearby info"
        (bytes.fromhex("0719010e20"), "truncated"),
        (bytes.fromhex("0713") + bytes(19), "short_payload"),
        (bytes.fromhex("071a") + bytes(26), "unexpected_length"),
        (bytes.fromhex("0719") + bytes(24), "truncated"),
    ],
    ids=["empty", "type-only", "nearby-info", "header-only", "length-19", "length-26", "one-short"],
)
def test_malformed_payload_raises_advert_error_with_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(AdvertError) as caught:
        parse_proximity_pairing(payload)
    assert caught.value.reason == reason
    assert str(caught.value) and "\n" not in str(caught.value)


@given(st.binary(max_size=40))
def test_fuzz_any_bytes_decode_or_raise_advert_error(payload: bytes) -> None:
    """Arbitrary bytes never raise anything but AdvertError."""
    try:
        parse_proximity_pairing(payload)
    except AdvertError:
        pass


@given(st.binary(min_size=0, max_size=30).map(lambda tail: b"\x07\x19" + tail))
def test_fuzz_plausible_headers_decode_or_raise_advert_error(payload: bytes) -> None:
    """Payloads with a genuine header and random bodies decode iff they are long enough."""
    try:
        state = parse_proximity_pairing(payload)
    except AdvertError as exc:
        assert exc.reason == "truncated" and len(payload) < 27
    else:
        assert len(payload) >= 27
        for pct in (state.left_pct, state.right_pct, state.case_pct, state.single_pct):
            assert pct is None or pct in range(0, 101, 10)
