"""x1p1.logs: journald and human formats, verbosity, and that no token reaches a line."""

from __future__ import annotations

import io
import logging
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from x1p1 import logs
from x1p1.cli import main


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    x1p1 = logging.getLogger("x1p1")
    saved = (list(root.handlers), root.level, x1p1.level)
    yield
    for handler in root.handlers:
        if handler not in saved[0]:
            root.removeHandler(handler)
    root.setLevel(saved[1])
    x1p1.setLevel(saved[2])


def token() -> str:
    """An X1 API token as a gateway makes one: 256 random bits, base64url, 43 chars."""
    value = secrets.token_urlsafe(32)
    assert len(value) == 43
    return value


def test_human_format_has_time_level_and_name() -> None:
    out = io.StringIO()
    logs.setup_logging(0, stream=out, journald=False)
    logging.getLogger("x1p1.converter.stream").info("connected to %s", "X1-interface.local")
    line = out.getvalue()
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d INFO    x1p1\.converter\.stream: connected to X1-interface\.local\n",
        line,
    ), line


def test_journal_format_has_priority_prefix_and_no_time() -> None:
    out = io.StringIO()
    logs.setup_logging(2, stream=out, journald=True)
    log = logging.getLogger("x1p1.test")
    log.critical("c")
    log.error("e")
    log.warning("w")
    log.info("i")
    log.debug("d")
    assert out.getvalue().splitlines() == [
        "<2>x1p1.test: c",
        "<3>x1p1.test: e",
        "<4>x1p1.test: w",
        "<6>x1p1.test: i",
        "<7>x1p1.test: d",
    ]


def test_journal_format_prefixes_every_traceback_line() -> None:
    out = io.StringIO()
    logs.setup_logging(0, stream=out, journald=True)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("x1p1.test").exception("relay failed")
    lines = out.getvalue().splitlines()
    assert lines[0] == "<3>x1p1.test: relay failed"
    assert len(lines) > 3
    assert all(line.startswith("<3>") for line in lines)
    assert lines[-1] == "<3>RuntimeError: boom"


def test_journal_stream_matching_stderr_is_detected(tmp_path: Path) -> None:
    with open(tmp_path / "journal", "w") as stream, open(tmp_path / "other", "w") as other:
        st = os.fstat(stream.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert logs.under_journald(stream, env)
        assert not logs.under_journald(other, env)
        assert not logs.under_journald(stream, {"JOURNAL_STREAM": "garbage"})
        assert not logs.under_journald(stream, {})


def test_invocation_id_counts_unless_stderr_is_a_terminal(tmp_path: Path) -> None:
    env = {"INVOCATION_ID": "0123456789abcdef0123456789abcdef"}
    with open(tmp_path / "file", "w") as stream:
        assert logs.under_journald(stream, env)
    leader, follower = os.openpty()
    try:
        with open(follower, "w", closefd=False) as tty:
            assert not logs.under_journald(tty, env)
    finally:
        os.close(leader)
        os.close(follower)
    assert logs.under_journald(io.StringIO(), env)  # no file descriptor: not a terminal
    assert not logs.under_journald(io.StringIO(), {})


def test_detection_picks_the_format(tmp_path: Path) -> None:
    with open(tmp_path / "err", "w+") as stream:
        st = os.fstat(stream.fileno())
        logs.setup_logging(0, stream=stream, env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        logging.getLogger("x1p1.test").warning("adapter unplugged")
        stream.flush()
        assert (tmp_path / "err").read_text() == "<4>x1p1.test: adapter unplugged\n"


@pytest.mark.parametrize(
    ("verbosity", "level", "x1p1_level", "root_level"),
    [
        (0, None, logging.INFO, logging.WARNING),
        (1, None, logging.DEBUG, logging.WARNING),
        (2, None, logging.DEBUG, logging.DEBUG),
        (-1, None, logging.WARNING, logging.WARNING),
        (-2, None, logging.ERROR, logging.ERROR),
        (-5, None, logging.ERROR, logging.ERROR),
        (0, "debug", logging.DEBUG, logging.WARNING),
        (0, "ERROR", logging.ERROR, logging.ERROR),
        (-1, "debug", logging.WARNING, logging.WARNING),  # the command line wins
    ],
)
def test_levels(verbosity: int, level: str | None, x1p1_level: int, root_level: int) -> None:
    logs.setup_logging(verbosity, level=level, stream=io.StringIO(), journald=False)
    assert logging.getLogger("x1p1").level == x1p1_level
    assert logging.getLogger().level == root_level


def test_quiet_hides_info_and_library_debug_needs_two_v() -> None:
    out = io.StringIO()
    logs.setup_logging(-1, stream=out, journald=True)
    logging.getLogger("x1p1.test").info("hidden")
    logging.getLogger("x1p1.test").warning("shown")
    logs.setup_logging(1, stream=out, journald=True)
    logging.getLogger("websockets.client").debug("frame")
    logging.getLogger("x1p1.test").debug("mine")
    assert out.getvalue().splitlines() == ["<4>x1p1.test: shown", "<7>x1p1.test: mine"]


def test_unknown_level_name() -> None:
    with pytest.raises(ValueError, match="choose debug, info, warning, error"):
        logs.level_for(0, "verbose")


def test_setup_twice_keeps_one_handler_and_leaves_others() -> None:
    root = logging.getLogger()
    foreign = logging.NullHandler()
    root.addHandler(foreign)
    first = logs.setup_logging(0, stream=io.StringIO())
    second = logs.setup_logging(0, stream=io.StringIO())
    assert first not in root.handlers
    assert second in root.handlers
    assert foreign in root.handlers
    root.removeHandler(foreign)


def test_default_stream_follows_sys_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    logs.setup_logging(0, journald=False)
    later = io.StringIO()
    monkeypatch.setattr("sys.stderr", later)
    logging.getLogger("x1p1.test").warning("after the swap")
    assert "after the swap" in later.getvalue()


# --- redaction ---------------------------------------------------------------------


def test_token_in_arguments_is_redacted() -> None:
    out = io.StringIO()
    logs.setup_logging(1, stream=out, journald=False)
    secret = token()
    logging.getLogger("x1p1.pair").info("approved, token %s saved", secret)
    logging.getLogger("x1p1.pair").debug("saved %r", {"token": secret, "serial": "E0012"})
    text = out.getvalue()
    assert secret not in text
    assert "approved, token [redacted] saved" in text
    assert "'serial': 'E0012'" in text


@pytest.mark.parametrize(
    "template",
    [
        "Authorization: Bearer {t}",
        "> authorization: bearer {t}",
        '{{"token": "{t}", "expires_at": "2026-01-01"}}',
        "GET /api/legacy-p1?interval=1&token={t} HTTP/1.1",
        "token={t}",
        "padded {t}=",
        "in a url https://x/{t}/x",
        "{t}",
    ],
)
def test_redact_hides_the_token(template: str) -> None:
    secret = token()
    text = logs.redact(template.format(t=secret))
    assert secret not in text
    assert logs.REDACTED in text


def test_bearer_token_of_any_length_is_hidden() -> None:
    assert logs.redact("Authorization: Bearer abc.def-ghi") == "Authorization: Bearer [redacted]"


def test_redact_leaves_ordinary_text_alone() -> None:
    sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    text = (
        f"relayed 120 telegrams from E0043007316283218, sha {sha256}, "
        "CRC 0xBB3D, state dir /var/lib/x1p1/token.json, token expires in 89 days, "
        + "a" * 42
        + " "
        + "b" * 44
    )
    assert logs.redact(text) == text


def test_redact_is_idempotent() -> None:
    once = logs.redact(f"Bearer {token()} and {token()}")
    assert logs.redact(once) == once == "Bearer [redacted] and [redacted]"


def test_traceback_and_stack_are_redacted() -> None:
    out = io.StringIO()
    logs.setup_logging(0, stream=out, journald=False)
    secret = token()
    try:
        raise ValueError(f"server rejected {secret}")
    except ValueError:
        logging.getLogger("x1p1.test").exception("failed")
    logging.getLogger("x1p1.test").warning("here %s", secret, stack_info=True)
    text = out.getvalue()
    assert "ValueError: server rejected [redacted]" in text
    assert "Stack (most recent call last)" in text
    assert secret not in text


def test_bad_log_arguments_still_redacted_and_no_crash() -> None:
    # Straight through the filter: pytest's own capture handler would raise first.
    secret = token()
    record = logging.LogRecord(
        "x1p1.test", logging.WARNING, __file__, 1, "one %s two %s", (secret,), None
    )
    assert logs.RedactTokens().filter(record)
    text = logs.JournalFormatter().format(record)
    assert text.startswith("<4>x1p1.test: one %s two %s (log arguments")
    assert "do not fit" in text
    assert secret not in text


def test_library_records_are_redacted_too() -> None:
    out = io.StringIO()
    logs.setup_logging(2, stream=out, journald=True)
    secret = token()
    logging.getLogger("websockets.client").debug("> Authorization: Bearer %s", secret)
    assert out.getvalue() == "<7>websockets.client: > Authorization: Bearer [redacted]\n"


# --- the command line and a real process under a journal-like stderr ----------------


@pytest.mark.parametrize(
    ("args", "x1p1_level", "verbosity"),
    [
        ([], logging.INFO, 0),
        (["-v"], logging.DEBUG, 1),
        (["-vv"], logging.DEBUG, 2),
        (["-q"], logging.WARNING, -1),
        (["--quiet", "--quiet"], logging.ERROR, -2),
        (["-v", "-q"], logging.INFO, 0),
    ],
)
def test_cli_verbose_and_quiet(args: list[str], x1p1_level: int, verbosity: int) -> None:
    seen: dict[str, object] = {}

    @main.command("x1p1-logs-probe", hidden=True)
    @click.pass_context
    def probe(ctx: click.Context) -> None:
        seen["verbosity"] = ctx.meta["x1p1.verbosity"]
        seen["level"] = logging.getLogger("x1p1").level
        logging.getLogger("x1p1.test").warning("Bearer %s", token())

    try:
        result = CliRunner().invoke(main, [*args, "x1p1-logs-probe"])
    finally:
        main.commands.pop("x1p1-logs-probe")
    assert result.exit_code == 0, result.output
    assert seen == {"verbosity": verbosity, "level": x1p1_level}
    if x1p1_level <= logging.WARNING:
        assert "x1p1.test: Bearer [redacted]" in result.output


def test_a_real_process_logging_to_the_journal_stream(tmp_path: Path) -> None:
    secret = token()
    script = (
        "import logging, sys\n"
        "from x1p1.logs import setup_logging\n"
        "setup_logging(0)\n"
        "logging.getLogger('x1p1.converter').warning('token %s refused', sys.argv[1])\n"
        "logging.getLogger('x1p1.converter').info('relaying')\n"
    )
    journal = tmp_path / "journal"
    with open(journal, "w") as stderr:
        st = os.fstat(stderr.fileno())
        env = {k: v for k, v in os.environ.items() if k not in ("INVOCATION_ID",)}
        env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        subprocess.run(
            [sys.executable, "-c", script, secret], stderr=stderr, env=env, check=True, timeout=60
        )
    assert journal.read_text() == (
        "<4>x1p1.converter: token [redacted] refused\n<6>x1p1.converter: relaying\n"
    )
    with open(tmp_path / "terminal-ish", "w") as stderr:
        env.pop("JOURNAL_STREAM")
        subprocess.run(
            [sys.executable, "-c", script, secret], stderr=stderr, env=env, check=True, timeout=60
        )
    lines = (tmp_path / "terminal-ish").read_text().splitlines()
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d WARNING x1p1\.converter: token \[redacted\] refused", lines[0]
    )


# --- rate limits per cause (docs/reliability.md) ----------------------------------------------


def test_log_limiter_lets_a_share_through_per_cause_and_window() -> None:
    limiter = logs.LogLimiter(per_window=3, window=60.0, max_causes=4)
    assert [limiter.allow("a", 0.0) for _ in range(5)] == [0, 0, 0, None, None]
    assert limiter.allow("b", 1.0) == 0  # another cause has its own share
    assert limiter.allow("a", 59.9) is None
    assert limiter.allow("a", 60.0) == 3  # a new window: says how many were held back
    assert limiter.allow("a", 60.1) == 0
    assert limiter.allow("a", 10.0) == 0  # a clock that went back starts a window


def test_log_limiter_memory_is_bounded() -> None:
    """Varying the cause does not grow memory or the log: past max_causes, new causes
    share one."""
    limiter = logs.LogLimiter(per_window=2, window=60.0, max_causes=10)
    let_out = sum(limiter.allow(("refused", k), 0.0) is not None for k in range(10_000))
    assert len(limiter) <= 11
    assert let_out == 10 + 2  # ten causes once each, then the shared cause's share of 2
    assert sum(limiter.allow(("later", k), 61.0) is not None for k in range(5)) == 5


def test_a_flood_of_one_cause_writes_a_bounded_log() -> None:
    stream = io.StringIO()
    logs.setup_logging(0, stream=stream, journald=False)
    log = logging.getLogger("x1p1.test.flood")
    for k in range(5000):
        log.warning("connection from %s refused", f"127.0.0.{k % 250}")
    log.info("something else")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 21
    assert lines[-1].endswith("something else")
    clock = [0.0]
    handler = logs.setup_logging(0, stream=stream, journald=False)
    limiter = next(f for f in handler.filters if isinstance(f, logs.RateLimitLogs))
    limiter.clock = lambda: clock[0]
    for _ in range(30):
        log.warning("same %s", "thing")
    clock[0] = 61.0
    log.warning("same %s", "thing")
    assert stream.getvalue().splitlines()[-1].endswith("same thing (10 more like it held back)")
