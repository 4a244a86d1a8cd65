"""Decode Apple's "proximity pairing" BLE advert (continuity type 0x07).

The format is undocumented; this follows the reverse-engineered layout that
furiousMAC's continuity notes, OpenPods and CAPod agree on. Offsets are into
the manufacturer data after the company id 0x004C::

    0      type, 0x07
    1      length of what follows, 0x19 (25) on genuine devices
    2      0x01
    3-4    model code, big-endian (0x0E20 = AirPods Pro)
    5      status: bit 5 clear = "flipped" (the broadcasting pod is the left
           one, so the left/right halves below are swapped); low nibble has
           the in-ear bits (bit 1 and bit 3)
    6      pod batteries: high nibble right, low nibble left (swapped when flipped)
    7      high nibble charging bits (bit 0 left, bit 1 right, bit 2 case;
           left/right swapped when flipped), low nibble case battery
    8      lid open counter (changes when the lid opens; not a reliable state)
    9      colour
    10     0x00
    11-26  encrypted block, not decoded

A battery nibble of 0-10 means 0-100 % in steps of ten, 15 means "no data"
(pod in the case with the lid shut, or out of range of the other pod).

Pure functions only: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.airpods._errors import AdvertError

__all__ = [
    "APPLE_COMPANY_ID",
    "PROXIMITY_PAIRING_TYPE",
    "AirPodsModel",
    "AirPodsState",
    "KNOWN_MODELS",
    "parse_proximity_pairing",
]

#: Bluetooth SIG company identifier of Apple, the key in bleak's ``manufacturer_data``.
APPLE_COMPANY_ID = 0x004C
#: Continuity message type of the proximity-pairing (AirPods status) advert.
PROXIMITY_PAIRING_TYPE = 0x07
#: Length byte of every genuine advert seen so far. Counterfeit AirPods send
#: 0x13 (19) and their battery values are fixed, so they are refused.
_GENUINE_LENGTH = 25
_HEADER_BYTES = 2
_NO_DATA_NIBBLE = 0xF


@dataclass(frozen=True, slots=True)
class AirPodsModel:
    """What the model code in an advert says about the device."""

    code: int
    name: str
    single_battery: bool = False  #: one battery (headphones, neckband), no case
    reports_in_ear: bool = True  #: False when the in-ear bits are always zero


#: Model codes confirmed by decoded captures (tests/fixtures/ble) or by the
#: fact sheet. Codes outside this table still decode (as two pods and a case)
#: with ``model.name == "unknown"``, because Apple keeps adding models.
KNOWN_MODELS: dict[int, AirPodsModel] = {
    m.code: m
    for m in (
        AirPodsModel(0x0220, "AirPods 1"),
        AirPodsModel(0x0F20, "AirPods 2"),
        AirPodsModel(0x1320, "AirPods 3"),
        AirPodsModel(0x0E20, "AirPods Pro"),
        AirPodsModel(0x1420, "AirPods Pro 2"),
        AirPodsModel(0x0A20, "AirPods Max", single_battery=True),
        # Beats Flex report no in-ear and no charging state (OpenPods #105).
        AirPodsModel(0x1020, "Beats Flex", single_battery=True, reports_in_ear=False),
    )
}


@dataclass(frozen=True, slots=True)
class AirPodsState:
    """The status one proximity-pairing advert reports.

    Battery values are percent in steps of ten, or ``None`` when the device
    sends "no data". Two-pod models fill the left/right/case fields; one-battery
    models (AirPods Max, Beats Flex) fill ``single_pct`` and ``single_charging``
    and report "worn" in both in-ear flags.
    """

    model: AirPodsModel
    left_pct: int | None
    right_pct: int | None
    case_pct: int | None
    single_pct: int | None
    left_charging: bool
    right_charging: bool
    case_charging: bool
    single_charging: bool
    left_in_ear: bool
    right_in_ear: bool
    flipped: bool
    #: Raw byte 8. It changes when the lid is opened, but what its values mean
    #: is not known reliably, so nothing in the gateway acts on it.
    lid_open_counter: int
    colour_code: int

    @property
    def any_in_ear(self) -> bool:
        """True when at least one pod is in an ear (or the headset is worn)."""
        return self.left_in_ear or self.right_in_ear


def _percent(nibble: int) -> int | None:
    # 11-14 have never been seen; treating them as "no data" keeps one odd
    # nibble from discarding the rest of an otherwise good advert.
    return nibble * 10 if nibble <= 10 else None


def _check_frame(data: bytes) -> None:
    if len(data) < _HEADER_BYTES:
        raise AdvertError(
            "truncated", f"advert of {len(data)} bytes is too short for a header; expected 27 bytes"
        )
    if data[0] != PROXIMITY_PAIRING_TYPE:
        raise AdvertError(
            "not_proximity_pairing",
            f"Apple message type 0x{data[0]:02x} is not proximity pairing (0x07)",
        )
    declared = data[1]
    if declared < _GENUINE_LENGTH:
        raise AdvertError(
            "short_payload",
            f"proximity-pairing length {declared} is below the genuine 25 bytes; "
            "19-byte payloads come from counterfeit AirPods whose values are fixed",
        )
    if declared > _GENUINE_LENGTH:
        raise AdvertError(
            "unexpected_length", f"proximity-pairing length {declared} is not the known 25 bytes"
        )
    if len(data) < _HEADER_BYTES + declared:
        raise AdvertError(
            "truncated",
            f"advert of {len(data)} bytes is shorter than its declared {_HEADER_BYTES + declared} bytes",
        )


def parse_proximity_pairing(manufacturer_data: bytes) -> AirPodsState:
    """Decode one AirPods status advert.

    Bytes after a complete 27-byte message are ignored: Apple may append
    another continuity message to the same manufacturer data.

    Args:
        manufacturer_data: Apple's manufacturer data, after the company id
            (bleak's ``advertisement_data.manufacturer_data[0x004C]``).

    Returns:
        The decoded state.

    Raises:
        AdvertError: the payload is not a proximity-pairing message, is cut
            short, or has a length no genuine device sends (``reason`` says which).
    """
    data = bytes(manufacturer_data)
    _check_frame(data)
    code = int.from_bytes(data[3:5], "big")
    model = KNOWN_MODELS.get(code, AirPodsModel(code, "unknown"))
    if model.single_battery:
        return _decode_single(model, data)
    return _decode_pods(model, data)


def _decode_single(model: AirPodsModel, data: bytes) -> AirPodsState:
    # One battery, in the low nibble whatever the flip bit says (CAPod's
    # AirPods Max decoding; OpenPods misread it as two pods, see its #124).
    # Bit 5 of the status, the flip bit on two-pod models, means "worn" here.
    status = data[5]
    worn = model.reports_in_ear and bool(status & 0x20)
    return AirPodsState(
        model=model,
        left_pct=None,
        right_pct=None,
        case_pct=None,
        single_pct=_percent(data[6] & 0x0F),
        left_charging=False,
        right_charging=False,
        case_charging=False,
        single_charging=bool((data[7] >> 4) & 0b001),
        left_in_ear=worn,
        right_in_ear=worn,
        flipped=not status & 0x20,
        lid_open_counter=data[8],
        colour_code=data[9],
    )


def _decode_pods(model: AirPodsModel, data: bytes) -> AirPodsState:
    status, pods, charge_and_case = data[5], data[6], data[7]
    flipped = not status & 0x20
    charging = charge_and_case >> 4
    ear = status & 0x0F
    # Upright: right battery in the high nibble, left charging bit 0, left
    # in-ear bit 1. Flipped: every left/right pair swaps.
    high, low = pods >> 4, pods & 0x0F
    left_nibble, right_nibble = (high, low) if flipped else (low, high)
    left_bit, right_bit = (0b010, 0b001) if flipped else (0b001, 0b010)
    left_ear_bit, right_ear_bit = (0b1000, 0b0010) if flipped else (0b0010, 0b1000)
    return AirPodsState(
        model=model,
        left_pct=_percent(left_nibble),
        right_pct=_percent(right_nibble),
        case_pct=_percent(charge_and_case & 0x0F),
        single_pct=None,
        left_charging=bool(charging & left_bit),
        right_charging=bool(charging & right_bit),
        case_charging=bool(charging & 0b100),
        single_charging=False,
        left_in_ear=bool(ear & left_ear_bit),
        right_in_ear=bool(ear & right_ear_bit),
        flipped=flipped,
        lid_open_counter=data[8],
        colour_code=data[9],
    )
