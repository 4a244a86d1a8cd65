"""StreamDecoder under hostile input: noise mixed with valid frames, split into arbitrary reads."""

from __future__ import annotations

from typing import Any

import shim_reference_codecs as ref
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_shim import MAX_WIRE_FRAME_BYTES, Frame, FrameType, RejectedFrame, StreamDecoder

frames = st.tuples(
    st.sampled_from(list(FrameType)),
    st.integers(0, 0xFFFFFFFF),
    st.one_of(
        st.binary(max_size=80), st.binary(max_size=1024).map(lambda b: b.replace(b"\x00", b"\x02"))
    ),
).map(lambda t: Frame(t[0], t[1], t[2]))
noise = st.one_of(
    st.binary(max_size=64),
    # Runs with no delimiter, some longer than any frame: the decoder must drop them and stay bounded.
    st.binary(min_size=1, max_size=3 * MAX_WIRE_FRAME_BYTES).map(
        lambda b: b.replace(b"\x00", b"\xff")
    ),
    st.integers(1, 5).map(lambda n: b"\x00" * n),
)
segments = st.lists(st.one_of(frames, noise), max_size=10)
read_sizes = st.lists(st.integers(1, 700), min_size=1, max_size=40)


def build_stream(parts: list[Frame | bytes]) -> tuple[bytes, list[Frame]]:
    """Noise as is; each frame behind a delimiter, so a delimiter surrounds it on both sides."""
    stream, expected = bytearray(), []
    for part in parts:
        if isinstance(part, Frame):
            stream += b"\x00" + ref.wire_frame(int(part.type), part.seq, part.payload)
            expected.append(part)
        else:
            stream += part
    return bytes(stream), expected


def feed_in_reads(data: bytes, sizes: list[int]) -> list[Any]:
    """Feed ``data`` in reads of the given sizes (the last size repeats), checking the bound after each."""
    decoder, out, pos, i = StreamDecoder(), [], 0, 0
    while pos < len(data):
        size = sizes[min(i, len(sizes) - 1)]
        out += decoder.feed(data[pos : pos + size])
        pos, i = pos + size, i + 1
        assert decoder.pending_bytes <= MAX_WIRE_FRAME_BYTES
    return out


@settings(max_examples=250, deadline=None)
@given(segments, read_sizes)
def test_every_delimited_frame_is_recovered_once_and_in_order(
    parts: list[Frame | bytes], sizes: list[int]
) -> None:
    stream, expected = build_stream(parts)
    out = feed_in_reads(stream, sizes)  # raises nothing, or the test fails here
    assert all(isinstance(item, (Frame, RejectedFrame)) for item in out)
    assert [item for item in out if isinstance(item, Frame)] == expected


@settings(max_examples=150, deadline=None)
@given(segments, read_sizes)
def test_how_reads_split_the_stream_changes_nothing(
    parts: list[Frame | bytes], sizes: list[int]
) -> None:
    stream, _ = build_stream(parts)
    whole = StreamDecoder().feed(stream)
    split = feed_in_reads(stream, sizes)
    summary = [(type(i).__name__, i.reason if isinstance(i, RejectedFrame) else i) for i in whole]
    assert [
        (type(i).__name__, i.reason if isinstance(i, RejectedFrame) else i) for i in split
    ] == summary


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=2000), max_size=20))
def test_pure_noise_never_raises_and_stays_bounded(reads: list[bytes]) -> None:
    decoder = StreamDecoder()
    for data in reads:
        for item in decoder.feed(data):
            assert isinstance(item, RejectedFrame) or isinstance(item, Frame)
        assert decoder.pending_bytes <= MAX_WIRE_FRAME_BYTES


def test_a_long_run_is_reported_once_and_the_next_frame_survives() -> None:
    decoder = StreamDecoder()
    out = []
    for _ in range(10):  # 10 000 bytes without a delimiter, in 1000-byte reads
        out += decoder.feed(b"\x55" * 1000)
        assert decoder.pending_bytes <= MAX_WIRE_FRAME_BYTES
    out += decoder.feed(b"\x00" + ref.wire_frame(int(FrameType.HEARTBEAT), 0))
    assert [i.reason for i in out if isinstance(i, RejectedFrame)] == ["too_large"]
    assert [i for i in out if isinstance(i, Frame)] == [Frame(FrameType.HEARTBEAT, 0)]


def test_a_frame_cut_by_noise_costs_that_frame_only() -> None:
    good = ref.wire_frame(int(FrameType.CUE_ACK), 3)
    cut = ref.wire_frame(int(FrameType.CUE_ACK), 4)[:5]  # tail lost, then the line recovers
    out = StreamDecoder().feed(good + cut + b"\x00" + good)
    assert [type(i).__name__ for i in out] == ["Frame", "RejectedFrame", "Frame"]
