"""TelegramReader: framing in any split, resynchronisation, bounded buffer (P1 §6.2)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.p1_corpus import corpus
from x1p1.p1 import (
    Garbage,
    InvalidTelegram,
    InvalidTelegramReason,
    TelegramReader,
    ValidTelegram,
    crc16,
)
from x1p1.p1.reader import Event

CORPUS = corpus()
NAMES = sorted(CORPUS)


def read_all(chunks: list[bytes], max_size: int = 8192) -> list[Event]:
    reader = TelegramReader(max_size)
    events: list[Event] = []
    for chunk in chunks:
        events += reader.feed(chunk)
    reader.receive_eof()
    return events + reader.events_received()


def test_crc_check_value() -> None:
    assert crc16(b"123456789") == 0xBB3D


@pytest.mark.parametrize("name", NAMES)
def test_whole_telegram_is_one_valid_event(name: str) -> None:
    raw = CORPUS[name]
    events = read_all([raw])
    assert events == [ValidTelegram(raw, raw[raw.rindex(b"!") + 1 : -2].decode())]


@pytest.mark.parametrize("name", NAMES)
def test_every_split_gives_the_same_events(name: str) -> None:
    raw = CORPUS[name]
    noisy = b"\x00\xffnoise\r\n" + raw + b"junk!12" + raw + raw
    expected = read_all([noisy])
    assert [type(e) for e in expected] == [
        Garbage,
        ValidTelegram,
        Garbage,
        ValidTelegram,
        ValidTelegram,
    ]
    assert read_all([bytes([b]) for b in noisy]) == expected
    for cut in range(len(noisy)):
        assert read_all([noisy[:cut], noisy[cut:]]) == expected, cut


def test_two_glued_and_noise_between() -> None:
    a, b = CORPUS["three-phase"], CORPUS["one-phase"]
    events = read_all([b"xx" + a + b"\r\n\r\n" + b])
    assert events == [
        Garbage(2),
        ValidTelegram(a, a[-6:-2].decode()),
        Garbage(4),
        ValidTelegram(b, b[-6:-2].decode()),
    ]


def test_crc_mismatch_reports_both_crcs() -> None:
    raw = bytearray(CORPUS["three-phase"])
    raw[40] ^= 0x01
    (event,) = read_all([bytes(raw)])
    assert isinstance(event, InvalidTelegram)
    assert event.reason is InvalidTelegramReason.CRC_MISMATCH
    assert event.crc == raw[-6:-2].decode()
    assert event.expected is not None and event.expected != event.crc
    assert event.raw == bytes(raw)


def test_missing_crc() -> None:
    body = CORPUS["three-phase"][:-6]
    (event,) = read_all([body + b"\r\n"])
    assert isinstance(event, InvalidTelegram)
    assert event.reason is InvalidTelegramReason.MISSING_CRC


def test_lower_case_crc_is_not_accepted() -> None:
    raw = CORPUS["spec-example"]
    lowered = raw[:-6] + raw[-6:-2].lower() + b"\r\n"
    assert raw[-6:-2] != raw[-6:-2].lower()
    (event,) = read_all([lowered])
    assert isinstance(event, InvalidTelegram)


def test_new_slash_cuts_a_telegram_short_and_resynchronises() -> None:
    raw = CORPUS["three-phase"]
    events = read_all([raw[:300] + raw])
    assert isinstance(events[0], InvalidTelegram)
    assert events[0].reason is InvalidTelegramReason.TRUNCATED
    assert events[0].raw == raw[:300]
    assert events[1] == ValidTelegram(raw, raw[-6:-2].decode())


def test_end_of_input_reports_the_incomplete_telegram() -> None:
    raw = CORPUS["three-phase"]
    events = read_all([raw[:-3]])
    assert len(events) == 1 and isinstance(events[0], InvalidTelegram)


def test_oversize_is_capped_and_reader_recovers() -> None:
    raw = CORPUS["three-phase"]
    reader = TelegramReader(max_size=512)
    events = reader.feed(b"/" + b"A" * 5000)
    assert reader.buffered <= 512
    assert [e.reason for e in events if isinstance(e, InvalidTelegram)] == [
        InvalidTelegramReason.OVERSIZE
    ]
    assert len(events[0].raw) == 512  # type: ignore[union-attr]
    big = TelegramReader(max_size=2048)
    big.feed(b"/" + b"A" * 5000)
    assert big.feed(raw) == [Garbage(5001 - 2048), ValidTelegram(raw, raw[-6:-2].decode())]


def test_default_cap_accepts_4096_byte_telegrams() -> None:
    from x1p1.p1.telegram import CosemObject, Telegram

    text = CosemObject("0-0:96.13.0", ("41" * 1900,))
    raw = Telegram.build("XMX5BIG", [text]).serialize()
    assert len(raw) > 3800
    assert isinstance(read_all([raw])[0], ValidTelegram)


def test_max_size_has_a_floor() -> None:
    with pytest.raises(ValueError):
        TelegramReader(max_size=10)


def test_endless_noise_costs_bounded_memory() -> None:
    reader = TelegramReader(max_size=1024)
    for _ in range(200):
        reader.receive_data(b"/" + bytes(range(0x30, 0x3A)) * 500)
        assert reader.buffered <= 1024
        reader.events_received()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4000), st.integers(min_value=64, max_value=9000))
def test_arbitrary_bytes_never_raise(data: bytes, max_size: int) -> None:
    reader = TelegramReader(max_size)
    reader.receive_data(data)
    reader.receive_eof()
    for event in reader.events_received():
        if isinstance(event, ValidTelegram):
            assert event.raw.startswith(b"/") and event.raw.endswith(b"\r\n")
    assert reader.buffered == 0


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(NAMES), st.data())
def test_any_single_bit_flip_is_never_valid(name: str, data: st.DataObject) -> None:
    raw = bytearray(CORPUS[name])
    index = data.draw(st.integers(0, len(raw) - 1))
    bit = data.draw(st.integers(0, 7))
    raw[index] ^= 1 << bit
    events = read_all([bytes(raw)])
    assert not any(isinstance(e, ValidTelegram) for e in events)
    assert any(isinstance(e, InvalidTelegram) for e in events) or raw[0:1] != b"/"


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(NAMES), st.binary(max_size=12), st.integers(0, 2000), st.data())
def test_whole_message_fast_path_agrees_with_byte_by_byte(
    name: str, junk: bytes, cut: int, data: st.DataObject
) -> None:
    """One message that is (almost) one telegram: the fast path may never judge it
    differently from the general path that sees it a byte at a time."""
    raw = CORPUS[name]
    at = min(cut, len(raw))
    message = data.draw(
        st.sampled_from([raw, raw[:at] + junk + raw[at:], raw + junk, b"/" + junk + raw[1:]])
    )
    if not message.startswith(b"/"):
        message = b"/" + message
    assert read_all([message]) == read_all([bytes([b]) for b in message])
    small = data.draw(st.integers(64, 2048))
    assert read_all([message], small) == read_all([bytes([b]) for b in message], small)


# --- the tolerant reader (docs/x1-api.md, "What the converter tolerates") ----------------


def _samples(count: int = 400) -> list[bytes]:
    from x1p1.p1 import dsmr5

    stream = dsmr5.sample_stream()
    return [next(stream) for _ in range(count)]


SAMPLES = _samples()


def _with_letters() -> bytes:
    """A telegram whose CRC has a letter in it (so lower case differs)."""
    return next(raw for raw in SAMPLES if any(c in b"ABCDEF" for c in raw[-6:-2]))


def read_messages(messages: list[bytes]) -> list[Event]:
    """Each item is one WebSocket message."""
    reader = TelegramReader(tolerant=True)
    events: list[Event] = []
    for message in messages:
        reader.receive_data(message)
        reader.end_of_message()
        events += reader.events_received()
    reader.receive_eof()
    return events + reader.events_received()


def _variants(raw: bytes) -> dict[str, bytes]:
    bang = raw.rindex(b"!")
    body, crc = raw[: bang + 1], raw[bang + 1 : -2]
    return {
        "as sent": raw,
        "lower-case CRC": body + crc.lower() + b"\r\n",
        "no CR LF": body + crc,
        "lower case, no CR LF": body + crc.lower(),
        "LF only": body + crc + b"\n",
        "CR only": body + crc + b"\r",
    }


VARIANTS = list(_variants(b"/x!0000\r\n"))


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_tolerant_reader_writes_the_crc_line_as_p1_has_it(variant: str) -> None:
    raw = _with_letters()
    events = read_messages([_variants(raw)[variant]])
    assert [type(e) for e in events] == [ValidTelegram], variant
    assert events[0].raw == raw  # upper case, CR LF; "/" … "!" untouched


@pytest.mark.parametrize("variant", ["no CR LF", "lower case, no CR LF"])
def test_merged_telegrams_without_cr_lf_are_each_supplied(variant: str) -> None:
    raw = _with_letters()
    message = _variants(raw)[variant]
    events = read_messages([message + message + message])
    assert [e.raw for e in events if isinstance(e, ValidTelegram)] == [raw] * 3


def test_a_short_crc_is_written_as_four_digits() -> None:
    padded = [raw for raw in SAMPLES if raw[raw.rindex(b"!") + 1 :].startswith(b"0")]
    assert padded
    for raw in padded:
        bang = raw.rindex(b"!")
        short = raw[: bang + 1] + (raw[bang + 1 : -2].lstrip(b"0") or b"0") + b"\r\n"
        (event,) = read_messages([short])
        assert isinstance(event, ValidTelegram) and event.raw == raw


def test_a_message_split_inside_the_crc_still_waits_for_the_rest() -> None:
    raw = _with_letters()
    for cut in range(len(raw) - 6, len(raw)):
        events = read_messages([raw[:cut], raw[cut:]])
        assert [e.raw for e in events if isinstance(e, ValidTelegram)] == [raw], cut
        assert not [e for e in events if isinstance(e, InvalidTelegram)], cut


def test_a_bad_crc_stays_bad_when_tolerant() -> None:
    raw = _with_letters()
    bang = raw.rindex(b"!")
    wrong = raw[: bang + 1] + f"{(int(raw[bang + 1 : -2], 16) + 1) % 65536:04x}".encode()
    (event,) = read_messages([wrong])
    assert isinstance(event, InvalidTelegram)
    assert event.reason is InvalidTelegramReason.CRC_MISMATCH


def test_the_strict_reader_is_unchanged() -> None:
    raw = _with_letters()
    for variant, message in _variants(raw).items():
        events = read_all([message])
        valid = [e for e in events if isinstance(e, ValidTelegram)]
        assert bool(valid) is (variant == "as sent"), variant


@given(st.integers(0, len(SAMPLES) - 1), st.data())
@settings(max_examples=80)
def test_tolerated_telegrams_are_read_by_dsmr_parser(index: int, data: st.DataObject) -> None:
    from dsmr_parser import telegram_specifications
    from dsmr_parser.parsers import TelegramParser

    raw = SAMPLES[index]
    message = _variants(raw)[data.draw(st.sampled_from(VARIANTS))]
    cut = data.draw(st.integers(0, len(message) - 1))
    events = read_messages([message[:cut], message[cut:]] if cut else [message])
    [telegram] = [e for e in events if isinstance(e, ValidTelegram)]
    assert telegram.raw == raw
    parser = TelegramParser(telegram_specifications.V5, apply_checksum_validation=True)
    parser.parse(telegram.raw.decode("latin-1"))
