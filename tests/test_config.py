"""x1p1.converter.config: the run configuration, its sources, and every error it reports."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.ca_files import ca_pem
from x1p1.converter import config
from x1p1.converter.config import (
    GatewayAddress,
    ListenAddress,
    OutputConfig,
    RunConfig,
    default_state_dir,
    key_lines,
    load_run_config,
)
from x1p1.converter.supervisor import ConverterOptions
from x1p1.exceptions import ConfigError

EXAMPLE = Path(__file__).parent.parent / "docs" / "config.example.toml"


@pytest.fixture(autouse=True)
def no_system_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never read the machine's own /etc/x1p1/config.toml or environment."""
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", tmp_path / "etc" / "config.toml")
    for name in ("X1P1_CONFIG", "X1P1_STATE_DIR", "STATE_DIRECTORY", "XDG_STATE_HOME"):
        monkeypatch.delenv(name, raising=False)


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path | None, overrides: dict[str, object] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_run_config(path, overrides)
    return str(info.value)


# --- sources and precedence ---------------------------------------------------------


def test_no_file_gives_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = load_run_config(None, {})
    assert cfg == RunConfig(
        gateway=None,
        ca=None,
        serial="/dev/x1p1-p1",
        data_request="ignore",
        tcp=None,
        state_dir=tmp_path / "home" / ".local" / "state" / "x1p1",
        log_level="info",
    )
    assert cfg.source is None


def test_example_config_loads(tmp_path: Path) -> None:
    cfg = load_run_config(EXAMPLE, {}, env={"X1P1_STATE_DIR": str(tmp_path)})
    assert cfg.serial == "/dev/x1p1-p1"
    assert cfg.data_request == "ignore"
    assert cfg.log_level == "info"
    assert cfg.gateway is None and cfg.tcp is None and cfg.ca is None
    assert cfg.source == EXAMPLE


def test_example_config_with_its_outputs_loads_as_its_comments_say(tmp_path: Path) -> None:
    """The [[output]] tables uncommented and the flat serial and data_request commented
    out, as the example tells: the outputs load, and log_level stays a top-level key."""
    lines = EXAMPLE.read_text().splitlines()
    first = lines.index("#[[output]]")
    table_lines = ("#[[output]]", "#") + tuple(f"#{key} = " for key in config.OUTPUT_KEYS)
    edited = [
        "#" + line if line.startswith(("serial = ", "data_request = ")) else line
        for line in lines[:first]
    ] + [
        line.removeprefix("#") if line == "#" or line.startswith(table_lines) else line
        for line in lines[first:]
    ]
    path = write(tmp_path, "\n".join(edited) + "\n", "two-outputs.toml")
    cfg = load_run_config(path, {}, env={"X1P1_STATE_DIR": str(tmp_path)})
    assert cfg.log_level == "info"
    assert cfg.all_outputs() == (
        OutputConfig(serial="/dev/x1p1-p1", data_request="cts"),
        OutputConfig(serial="/dev/x1p1-p1-2", interval=10),
        OutputConfig(tcp=ListenAddress("0.0.0.0", 2001)),
    )


def test_an_error_in_an_output_table_names_that_tables_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[[output]]\nserial = "/dev/ttyUSB0"\n\n[[output]]\ntcp = "127.0.0.1:2001"\n'
        "\n[[output]]\n"
        'tcp = ":2002"\nlog_level = "info"\n',
    )
    assert error_of(path) == (
        f"{path} line 7: [[output]] number 3 has an unknown key 'log_level'; known keys: "
        + ", ".join(config.OUTPUT_KEYS)
    )
    path = write(tmp_path, '[[output]]\ntcp = ":2001"\n[[output]]\ntcp = ":2001"\n')
    assert error_of(path).startswith(f"{path} line 3: tcp ")


def test_example_config_documents_every_key() -> None:
    text = EXAMPLE.read_text()
    for key in config.KNOWN_KEYS:
        table = key == "output" and f"\n#[[{key}]]" in text
        assert f"\n{key} = " in text or f"\n#{key} = " in text or table, key


def test_every_key_from_the_file(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_bytes(ca_pem())
    path = write(
        tmp_path,
        """
        gateway = "wss://X1-interface.local:8443"
        ca = "ca.pem"
        serial = "socket://127.0.0.1:7000"
        data_request = "cts"
        tcp = "[::]:2001"
        state_dir = "state"
        log_level = "WARNING"
        """,
    )
    cfg = load_run_config(path, {})
    assert cfg.gateway == GatewayAddress("X1-interface.local", 8443, "wss")
    assert cfg.ca == tmp_path / "ca.pem"  # relative to the file's directory
    assert cfg.serial == "socket://127.0.0.1:7000"
    assert cfg.data_request == "cts"
    assert cfg.tcp == ListenAddress("::", 2001)
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.log_level == "warning"


def test_command_line_wins_and_none_means_not_given(tmp_path: Path) -> None:
    path = write(tmp_path, 'data_request = "dsr"\nserial = "/dev/ttyUSB0"\ntcp = ":2001"\n')
    cfg = load_run_config(
        path,
        {
            "serial": "/dev/ttyACM0",
            "data_request": None,
            "tcp": "127.0.0.1:0",
            "gateway": "10.0.0.2",
            "state_dir": tmp_path / "cli-state",
            "log_level": None,
        },
    )
    assert cfg.serial == "/dev/ttyACM0"
    assert cfg.data_request == "dsr"
    assert cfg.tcp == ListenAddress("127.0.0.1", 0)
    assert cfg.gateway == GatewayAddress("10.0.0.2", 443, "https")
    assert cfg.state_dir == tmp_path / "cli-state"


def test_overrides_take_parsed_values(tmp_path: Path) -> None:
    gateway = GatewayAddress("gw.local", 8443)
    tcp = ListenAddress("", 2001)
    cfg = load_run_config(None, {"gateway": gateway, "tcp": tcp}, env={"HOME": str(tmp_path)})
    assert cfg.gateway is gateway and cfg.tcp is tcp


def test_x1p1_config_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, 'data_request = "cts"\n', "elsewhere.toml")
    monkeypatch.setenv("X1P1_CONFIG", str(path))
    assert load_run_config(None, {}).data_request == "cts"
    # an explicit path wins over the variable
    other = write(tmp_path, 'data_request = "dsr"\n', "other.toml")
    assert load_run_config(other, {}).data_request == "dsr"


def test_x1p1_config_naming_a_missing_file_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("X1P1_CONFIG", str(tmp_path / "nope.toml"))
    message = error_of(None)
    assert message.startswith(f"{tmp_path / 'nope.toml'}: cannot read it:")
    assert "No such file" in message


def test_default_file_is_read_when_it_exists(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    write(tmp_path / "etc", 'serial = "/dev/ttyAMA0"\n')
    cfg = load_run_config(None, {})
    assert cfg.serial == "/dev/ttyAMA0"
    assert cfg.source == tmp_path / "etc" / "config.toml"


def test_state_dir_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_state_dir({"HOME": "/home/pi"}) == Path("/home/pi/.local/state/x1p1")
    assert default_state_dir({"HOME": "/h", "XDG_STATE_HOME": "/xdg"}) == Path("/xdg/x1p1")
    assert default_state_dir({"HOME": "/h", "XDG_STATE_HOME": "rel"}) == Path(
        "/h/.local/state/x1p1"
    )
    systemd = {"HOME": "/h", "XDG_STATE_HOME": "/xdg", "STATE_DIRECTORY": "/var/lib/x1p1"}
    assert default_state_dir(systemd) == Path("/var/lib/x1p1")
    assert default_state_dir({"STATE_DIRECTORY": "/var/lib/a:/var/lib/b"}) == Path("/var/lib/a")
    assert default_state_dir({**systemd, "X1P1_STATE_DIR": "/srv/x1p1"}) == Path("/srv/x1p1")
    monkeypatch.setenv("X1P1_STATE_DIR", str(tmp_path / "env"))
    assert default_state_dir() == tmp_path / "env"
    assert load_run_config(None, {}).state_dir == tmp_path / "env"
    path = write(tmp_path, f'state_dir = "{tmp_path / "file"}"\n')
    assert load_run_config(path, {}).state_dir == tmp_path / "file"
    assert load_run_config(path, {"state_dir": "/cli"}).state_dir == Path("/cli")


def test_tilde_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    path = write(tmp_path, 'state_dir = "~/x1p1-state"\n')
    assert load_run_config(path, {}).state_dir == tmp_path / "x1p1-state"


# --- errors in the file: each names the file, the line and what is allowed -----------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            'data_request = "rts"',
            "data_request = 'rts' is not allowed; choose ignore, cts or dsr",
        ),
        (
            "data_request = true",
            "data_request = true is not allowed; choose ignore, cts or dsr (a string in quotes)",
        ),
        (
            'log_level = "verbose"',
            "log_level = 'verbose' is not allowed; choose debug, info, warning or error",
        ),
        (
            'serial = "ttyUSB0"',
            "serial = 'ttyUSB0' is not allowed; give a device path such as /dev/x1p1-p1",
        ),
        ("serial = 115200", "serial = 115200 is not allowed; give a device path"),
        ('tcp = "2001"', "tcp = '2001' has no port; give HOST:PORT, e.g. 127.0.0.1:2001"),
        ('tcp = "localhost:99999"', "tcp = 'localhost:99999' has port '99999'; a port is"),
        ("tcp = 2001", "tcp = 2001 is not allowed; give HOST:PORT"),
        (
            'tcp = "bad host!:2001"',
            "tcp = 'bad host!:2001' has no valid host name or address; give HOST:PORT",
        ),
        (
            'gateway = "ws://X1-interface.local"',
            "gateway = 'ws://X1-interface.local' uses ws://; X1 needs TLS",
        ),
        ('gateway = "gw:0"', "gateway = 'gw:0' has port '0'; a port is a number from 1 to"),
        ('gateway = ""', "gateway = '' is empty; give a host name or address"),
        ("gateway = { host = 'x' }", "gateway = a table is not allowed; give a host name"),
        ("gateway = ['a', 'b']", "gateway = ['a', 'b'] is not allowed; give a host name"),
        ('ca = "missing.pem"', "ca = 'missing.pem' is not a usable CA file ("),
        ('ca = ""', "ca = '' is not allowed; give the path of the gateway's CA certificate"),
        ("state_dir = 1", "state_dir = 1 is not allowed; give the directory"),
        ('state_dir = "  "', "state_dir = '  ' is not allowed; give the directory"),
    ],
)
def test_wrong_value(tmp_path: Path, line: str, expected: str) -> None:
    path = write(tmp_path, f"# x1p1\n\n{line}\n")
    message = error_of(path)
    assert message.startswith(f"{path} line 3: {expected}"), message


def test_the_error_of_the_brief(tmp_path: Path) -> None:
    path = write(tmp_path, '# comment\nserial = "/dev/ttyUSB0"\ndata_request = "rts"\n')
    assert error_of(path) == (
        f"{path} line 3: data_request = 'rts' is not allowed; choose ignore, cts or dsr"
    )


def test_ca_directory_is_not_a_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'ca = "."\n')
    assert error_of(path) == (
        f"{path} line 1: ca = '.' is not a usable CA file ({tmp_path}): it is a directory"
    )


def test_unknown_key_lists_the_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path, 'serial = "/dev/ttyUSB0"\n\nseriall = "/dev/ttyUSB1"\n')
    assert error_of(path) == (
        f"{path} line 3: unknown key 'seriall' (did you mean 'serial'?); known keys: "
        + ", ".join(sorted(config.KNOWN_KEYS))
    )
    assert "data_request, gateway" in error_of(path)


def test_unknown_key_without_a_near_match(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "\nbaudrate = 9600\n"))
    assert message.endswith(
        "line 2: unknown key 'baudrate'; known keys: " + ", ".join(sorted(config.KNOWN_KEYS))
    )


def test_a_table_is_an_unknown_key_at_its_header(tmp_path: Path) -> None:
    path = write(tmp_path, 'serial = "/dev/ttyUSB0"\n\n[run]\ntcp = ":2001"\n')
    assert error_of(path).startswith(f"{path} line 3: unknown key 'run'; known keys:")


def test_a_dotted_key_is_found_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, '\n\ngateway.host = "x"\n')
    assert error_of(path).startswith(
        f"{path} line 3: gateway = a table is not allowed; give a host name"
    )


def test_quoted_key(tmp_path: Path) -> None:
    path = write(tmp_path, '\n"data_request" = "rts"\n')
    assert error_of(path).startswith(f"{path} line 2: data_request = 'rts' is not allowed")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('serial = "/dev/ttyUSB0"\ndata_request = \n', "line 2: not valid TOML: Invalid value"),
        ('serial = "/dev/ttyUSB0"\nserial = "/dev/ttyUSB1"\n', "line 2: not valid TOML: Cannot"),
        ("serial /dev/ttyUSB0\n", "line 1: not valid TOML: Expected '=' after a key"),
        ('\n\nserial = "/dev/ttyUSB0\n', "line 3: not valid TOML: Illegal character"),
        ('a = 1\nserial = """/dev/\n', "line 2: not valid TOML: Unterminated string (at the end"),
    ],
)
def test_toml_syntax_errors_give_the_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    message = error_of(path)
    assert message.startswith(f"{path} {expected}"), message


def test_toml_syntax_error_names_the_column(tmp_path: Path) -> None:
    path = write(tmp_path, "data_request = \n")
    assert error_of(path) == f"{path} line 1: not valid TOML: Invalid value (column 16)"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'serial = "/dev/ttyUSB0"\n# caf\xe9\n')
    assert error_of(path) == f"{path} line 2: is not UTF-8 text"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    assert error_of(path) == f"{path}: cannot read it: No such file or directory"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    assert error_of(tmp_path) == f"{tmp_path}: cannot read it: Is a directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_file(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    path.chmod(0)
    assert error_of(path) == f"{path}: cannot read it: Permission denied"


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    cfg = load_run_config(write(tmp_path, ""), {}, env={"X1P1_STATE_DIR": "/s"})
    assert cfg == RunConfig(state_dir=Path("/s"))


# --- errors on the command line ------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"tcp": "nowhere"}, "--tcp 'nowhere' has no port; give HOST:PORT"),
        ({"data_request": "rts"}, "--data-request 'rts' is not allowed; choose ignore, cts"),
        ({"gateway": "https://gw/x/../api"}, "--gateway 'https://gw/x/../api' has a bad path"),
        ({"gateway": "https://gw/api?x=1"}, "--gateway 'https://gw/api?x=1' has a query"),
        ({"api_base": "api"}, "--api-base 'api' is not allowed; give an absolute path"),
        ({"tcp_clients": 0}, "--tcp-clients 0 is not allowed; give a whole number"),
        ({"serial": "COM3"}, "--serial 'COM3' is not allowed; give a device path"),
        ({"log_level": "loud"}, "--log-level 'loud' is not allowed; choose debug"),
        (
            {"ca": "/no/such/ca.pem"},
            "--ca '/no/such/ca.pem' is not a usable CA file: it does not exist",
        ),
        (
            {"baud": 9600},
            "command line: unknown key 'baud'; known keys: api_base, ca, data_request",
        ),
    ],
)
def test_wrong_override(tmp_path: Path, overrides: dict[str, object], expected: str) -> None:
    message = error_of(None, overrides)
    assert message.startswith(expected), message


def test_override_relative_ca_is_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ca.pem").write_bytes(ca_pem())
    monkeypatch.chdir(tmp_path)
    assert load_run_config(None, {"ca": "ca.pem"}).ca == Path("ca.pem")


# --- addresses -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port", "scheme"),
    [
        ("X1-interface.local", "X1-interface.local", 443, "https"),
        ("X1-interface.local.", "X1-interface.local.", 443, "https"),
        ("192.168.1.20:8443", "192.168.1.20", 8443, "https"),
        ("fe80::1", "fe80::1", 443, "https"),
        ("[fe80::1%eth0]:8443", "fe80::1%eth0", 8443, "https"),
        ("wss://gw.local:8443", "gw.local", 8443, "wss"),
        ("WSS://gw.local", "gw.local", 443, "wss"),
        ("https://[2001:db8::2]:8443/", "2001:db8::2", 8443, "https"),
        ("https://[fe80::1%25eth0]:8443", "fe80::1%eth0", 8443, "https"),
        ("  gw  ", "gw", 443, "https"),
    ],
)
def test_gateway_address(text: str, host: str, port: int, scheme: str) -> None:
    assert GatewayAddress.parse(text) == GatewayAddress(host, port, scheme)  # type: ignore[arg-type]


def test_parse_helpers() -> None:
    assert config.parse_gateway("gw:8443") == GatewayAddress("gw", 8443)
    assert config.parse_listen(":2001") == ListenAddress("", 2001)
    with pytest.raises(ConfigError, match="^tcp 'x' has no port"):
        config.parse_listen("x")


def test_gateway_urls() -> None:
    address = GatewayAddress.parse("[fe80::1%eth0]:8443")
    assert address.netloc == str(address) == "[fe80::1%eth0]:8443"
    assert address.https_url == "https://[fe80::1%25eth0]:8443"
    assert address.wss_url("/api/legacy-p1?interval=1") == (
        "wss://[fe80::1%25eth0]:8443/api/legacy-p1?interval=1"
    )
    assert GatewayAddress.parse("gw").wss_url("/x") == "wss://gw:443/x"


@pytest.mark.parametrize(
    ("text", "api_base"),
    [
        ("https://gw", None),
        ("https://gw/", None),
        ("https://gw/x1/api", "/x1/api"),
        ("https://gw/x1/api/", "/x1/api"),
        ("wss://gw:8443/vendor/api/legacy-p1", "/vendor/api"),
        ("https://gw/api/tokens/requests", "/api"),
    ],
)
def test_a_gateway_url_may_carry_the_api_base(text: str, api_base: str | None) -> None:
    assert GatewayAddress.parse(text).api_base == api_base


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "is empty"),
        ("gw/api", "has a path but no scheme"),
        ("gw:https", "has port 'https'"),
        ("gw:65536", "has port '65536'"),
        ("[fe80::1", "unclosed or misplaced"),
        ("[fe80::1]8443", "unclosed or misplaced"),
        ("under_score.local", "has no valid host name or address"),
        ("-gw", "has no valid host name or address"),
        ("http://gw", "uses http://; X1 needs TLS"),
        ("ftp://gw", "uses the scheme 'ftp'"),
        ("wss://gw/api/x?y", "has a query or fragment"),
        ("wss://gw?x=1", "has a query or fragment"),
        ("wss://gw/a b", "has a bad path"),
        ("wss://user:pw@gw", "has a user name or password"),
        ("wss://", "has no host"),
        ("https://:8443", "has no host"),
    ],
)
def test_bad_gateway_address(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match="gateway") as info:
        GatewayAddress.parse(text)
    assert reason in str(info.value), str(info.value)


@pytest.mark.parametrize(
    ("text", "host", "port", "shown"),
    [
        ("127.0.0.1:2001", "127.0.0.1", 2001, "127.0.0.1:2001"),
        ("localhost:0", "localhost", 0, "localhost:0"),
        (":2001", "", 2001, ":2001"),
        ("[::]:2001", "::", 2001, "[::]:2001"),
    ],
)
def test_listen_address(text: str, host: str, port: int, shown: str) -> None:
    address = ListenAddress.parse(text)
    assert address == ListenAddress(host, port)
    assert str(address) == shown
    assert address.bind_host == (host or None)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("2001", "has no port"),
        ("::1", "has no port"),
        ("host:", "has port ''"),
        ("host:-1", "has port '-1'"),
        ("a b:1", "has no valid host name or address"),
    ],
)
def test_bad_listen_address(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match="tcp") as info:
        ListenAddress.parse(text)
    assert reason in str(info.value), str(info.value)


# --- the key scanner -----------------------------------------------------------------


def test_key_lines_skip_strings_arrays_and_tables() -> None:
    text = '''# a comment with serial = "x"
gateway = """
tcp = "inside a multi-line string"
"""
ca = \'\'\'
state_dir = 'inside a literal one'
\'\'\'
serial = [
  "log_level = 'in an array'",
  ] # data_request = "in a comment"
"data_request" = "cts"  # quoted
log_level = "info" # [notatable]
[table]
tcp = "inside the table"
[[array]]
'''
    assert key_lines(text) == {
        "gateway": 2,
        "ca": 5,
        "serial": 8,
        "data_request": 11,
        "log_level": 12,
        "table": 13,
        "array": 15,
        "array[1]": 15,
    }


def test_key_line_of_an_escaped_quote_string() -> None:
    assert key_lines('a = "x\\" b = 1"\nb = 2\n') == {"a": 1, "b": 2}


def test_serial_none_means_only_the_tcp_output(tmp_path: Path) -> None:
    path = write(tmp_path, 'serial = "none"\ntcp = "127.0.0.1:2001"\n')
    cfg = load_run_config(path, {}, env={"HOME": str(tmp_path)})
    assert ConverterOptions.from_run_config(cfg).serial is None  # no serial worker at all
    assert cfg.tcp == ListenAddress("127.0.0.1", 2001)
    alone = write(tmp_path, 'serial = "none"\n', "alone.toml")
    assert "nothing to write to" in error_of(alone)
    assert "nothing to write to" in error_of(None, {"serial": "none"})
    assert "or none (only the TCP output)" in error_of(None, {"serial": "ttyUSB0"})


# --- source and [[output]] tables -----------------------------------------------------------

TWO_OUTPUTS = """
source = "realtime"

[[output]]
serial = "/dev/x1p1-p1"
data_request = "cts"

[[output]]
serial = "/dev/x1p1-p1-2"
interval = 10

[[output]]
tcp = "0.0.0.0:2001"
"""


def test_outputs_and_source_from_the_file(tmp_path: Path) -> None:
    cfg = load_run_config(write(tmp_path, TWO_OUTPUTS), env={})
    assert cfg.data_source == "realtime"
    assert cfg.all_outputs() == (
        config.OutputConfig(serial="/dev/x1p1-p1", data_request="cts"),
        config.OutputConfig(serial="/dev/x1p1-p1-2", interval=10),
        config.OutputConfig(tcp=config.ListenAddress("0.0.0.0", 2001)),
    )


def test_flat_keys_are_one_output_each(tmp_path: Path) -> None:
    cfg = load_run_config(None, {"tcp": "127.0.0.1:2001", "serial": "/dev/ttyUSB0"}, env={})
    assert cfg.data_source == "auto"
    assert [o.name for o in cfg.all_outputs()] == ["/dev/ttyUSB0", "tcp 127.0.0.1:2001"]


def test_command_line_outputs_replace_the_files(tmp_path: Path) -> None:
    cfg = load_run_config(write(tmp_path, TWO_OUTPUTS), {"serial": "/dev/ttyACM0"}, env={})
    assert [o.name for o in cfg.all_outputs()] == ["/dev/ttyACM0"]
    cfg = load_run_config(write(tmp_path, TWO_OUTPUTS), {"source": "legacy-p1"}, env={})
    assert cfg.data_source == "legacy-p1" and len(cfg.all_outputs()) == 3


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        ('source = "p1"', "line 1: source = 'p1' is not allowed; choose auto, legacy-p1 or"),
        (
            '[[output]]\nserial = "/dev/a"\ninterval = 0',
            "line 1: in [[output]] number 1, interval = 0 is not allowed; give whole seconds",
        ),
        ('[[output]]\nserial = "/dev/a"\ntcp = ":2001"', "needs exactly one of serial or tcp"),
        ('[[output]]\ndata_request = "cts"', "needs exactly one of serial or tcp"),
        ('[[output]]\ntcp = ":2001"\ndata_request = "cts"', "data_request is for a serial"),
        ('[[output]]\nserial = "/dev/a"\nbaud = 9600', "unknown key 'baud'"),
        ('[[output]]\nserial = "/dev/a"\n[[output]]\nserial = "/dev/a"', "named by two"),
        ('[[output]]\nserial = "none"', "serial = 'none' is no output"),
        ('[[output]]\nserial = "/dev/a"\ndata_request = "rts"', "data_request = 'rts' is not"),
        ('serial = "/dev/a"\n[[output]]\nserial = "/dev/b"', "not both"),
        ("output = 3", "write each output as an [[output]] table"),
        ('[[output]]\nserial = "/dev/a"\n' * 9, "at most 8"),
    ],
)
def test_bad_outputs_get_one_sentence(tmp_path: Path, text: str, sentence: str) -> None:
    assert sentence in error_of(write(tmp_path, text))


def test_bad_source_on_the_command_line() -> None:
    assert "--source 'x' is not allowed" in error_of(None, {"source": "x"})
