"""The gas subscription's life cycle (x1p1/x1/gas_feed.py), with ``now`` passed in."""

from __future__ import annotations

from x1p1.x1.gas_feed import GAS_CATCH_WAIT, GAS_INTERVAL, GAS_TRANSITIONS, Gas, GasEv, GasFeed


def test_every_second_until_a_reading_then_every_minute() -> None:
    feed = GasFeed()
    assert feed.state is Gas.OFF and feed.builds(0.0) and feed.deadline() is None
    assert not feed.handle(GasEv.START_EMPTY, 100.0)
    assert feed.state is Gas.CATCHING and feed.interval == 1
    assert feed.deadline() == 100.0 + GAS_CATCH_WAIT
    assert not feed.builds(100.5)  # the first telegram waits for its gas reading
    assert feed.handle(GasEv.READING, 100.7)  # interval changed: subscribe anew
    assert feed.state is Gas.STEADY and feed.interval == GAS_INTERVAL
    assert feed.builds(100.8) and feed.deadline() is None
    assert not feed.handle(GasEv.READING, 160.0)
    assert feed.readings == 2


def test_a_silent_gas_stream_never_holds_the_electricity_back() -> None:
    feed = GasFeed()
    feed.handle(GasEv.START_EMPTY, 0.0)
    assert not feed.builds(GAS_CATCH_WAIT - 0.01)
    assert feed.builds(GAS_CATCH_WAIT)
    # a reconnect while still catching does not restart the wait
    feed.handle(GasEv.START_EMPTY, 2.0)
    assert feed.deadline() == GAS_CATCH_WAIT


def test_a_held_reading_reconnects_at_the_long_interval_and_stop_turns_it_off() -> None:
    feed = GasFeed()
    assert not feed.handle(GasEv.START_HELD, 5.0)
    assert feed.state is Gas.STEADY and feed.interval == GAS_INTERVAL and feed.builds(5.0)
    assert not feed.handle(GasEv.STOP, 6.0)
    assert feed.state is Gas.OFF and feed.builds(6.0)
    assert not feed.handle(GasEv.READING, 7.0)  # a late message after the stop
    assert feed.state is Gas.OFF and feed.readings == 0


def test_the_table_has_a_row_for_every_state() -> None:
    assert set(GAS_TRANSITIONS) == set(Gas)
    assert all(row[GasEv.STOP] is Gas.OFF for row in GAS_TRANSITIONS.values())
