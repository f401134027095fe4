"""The `x1p1` command line: click commands, each a few lines that build a config and call in.

Commands and options are an interface that users and scripts rely on
(architecture.md, "The command line"). Exit codes:

\b
  0  success
  1  error (a clear message on standard error)
  2  usage error (bad option or argument, a bad --ca file, or the gateway extra missing)
  Pairing (`x1p1 pair`) adds its own codes; see `x1p1 pair --help`. `x1p1 run` adds
  10-13 (:data:`RUN_EXIT`), `x1p1 status` 3 and 4, `x1p1 install` 14: see their --help.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from x1p1 import __version__
from x1p1.exceptions import (
    AlreadyRunning,
    BillingVerificationError,
    NotASerialDevice,
    StateDirError,
    TcpPortUnavailable,
    X1P1Error,
)

RUN_EXIT: dict[type[X1P1Error], int] = {
    TcpPortUnavailable: 10,
    NotASerialDevice: 11,
    StateDirError: 12,
    AlreadyRunning: 13,
}
"""`x1p1 run`'s exit codes for the mistakes it refuses at start (one sentence each); the
systemd unit does not restart on them (RestartPreventExitStatus=)."""

GATEWAY_EXTRA = "[gateway extra]"
"""The mark in --help on commands that need `pip install 'x1p1[gateway]'`."""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="x1p1")
@click.option("-v", "--verbose", count=True, help="Log more: -v x1p1's debug, -vv libraries' too.")
@click.option("-q", "--quiet", count=True, help="Log less: -q warnings and errors, -qq errors.")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: int) -> None:
    """x1p1: keep P1 dongles working on DSMR6 meters (X1 to P1), with an embedded gateway.

    \b
    Exit codes: 0 success, 1 error, 2 usage error (or the gateway extra missing);
    `x1p1 pair`, `run`, `status` and `install` list their own in their --help.
    Commands marked [gateway extra] need: pip install 'x1p1[gateway]'.
    """
    from x1p1.logs import setup_logging

    # -v/-q go before the command: `x1p1 -v run`. `run` re-applies the config file's
    # log_level when neither is given (ctx.meta["x1p1.verbosity"] == 0).
    ctx.meta["x1p1.verbosity"] = verbose - quiet
    setup_logging(verbose - quiet)


def fail(error: X1P1Error | str, code: int = 1) -> NoReturn:
    """Print a clear one-line error on standard error and exit with ``code``."""
    click.echo(f"x1p1: {error}", err=True)
    sys.exit(code)


def gateway_extra_missing(command: str) -> NoReturn:
    """The one sentence, exit 2, for a gateway command in the lean install."""
    fail(f"`x1p1 {command}` needs the gateway extra: pip install 'x1p1[gateway]'", 2)


def need_gateway_extra(command: str) -> None:
    """:func:`gateway_extra_missing` unless the gateway's libraries are installed (the
    lean install has neither aiohttp nor cryptography)."""
    try:
        import aiohttp  # noqa: F401
        import cryptography  # noqa: F401
    except ImportError:
        gateway_extra_missing(command)


@main.command()
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1, max=600),
    default=3.0,
    show_default=True,
    help="Seconds to listen for answers.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of the gateways.")
def discover(timeout: float, as_json: bool) -> None:
    """Find X1 gateways on this network by mDNS (X1 §4.3.3).

    Browses the _dsmr-x1-interface._tcp service and asks for the host names
    X1-interface.local … X1-interface-4.local. Lists host name, addresses, port and
    serial (the E meter's equipment id). Exits 1 when no gateway answers.
    """
    import asyncio

    from x1p1.converter.discovery import discover as run_discover

    try:
        found = asyncio.run(run_discover(timeout))
    except X1P1Error as error:
        fail(error)
    if as_json:
        click.echo(json.dumps([g.to_json() for g in found], indent=2))
    elif found:
        rows = [("HOST NAME", "ADDRESSES", "PORT", "SERIAL")] + [
            (g.host_name, ", ".join(g.addresses), str(g.port), g.serial or "-") for g in found
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        for row in rows:
            cells = [cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)]
            click.echo("  ".join([*cells, row[3]]))
    if not found:
        fail(
            f"no X1 gateway answered on mDNS within {timeout:g} s; check that the meter's "
            "X1 port is connected to this network (or raise --timeout)"
        )


@main.command()
@click.argument("source", metavar="PORT|URL|-")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per telegram per line.")
def monitor(source: str, as_json: bool) -> None:
    """Read P1 from a serial port, a pyserial URL or standard input (-) and check each CRC.

    Prints every telegram (with --json: valid, size, crc, header, objects, error) and a
    summary on standard error; the first line on standard error says which CRC-16 runs
    (crcmod's C code, or the pure-Python table where crcmod is not installed). Exits 0 at
    the end of input; Ctrl-C stops a port.
    """
    from x1p1.converter.monitor import monitor as run_monitor
    from x1p1.p1.crc import CRC_IMPLEMENTATION

    if source == "-":
        stdin = sys.stdin.buffer
        read = stdin.read1 if isinstance(stdin, io.BufferedReader) else stdin.read
    else:
        import serial

        try:
            port = serial.serial_for_url(source, baudrate=115200, timeout=0.5)
        except (serial.SerialException, ValueError) as exc:
            fail(f"cannot open {source}: {exc}")
        read = port.read
    click.echo(f"x1p1 monitor: checking CRC-16 with {CRC_IMPLEMENTATION}", err=True)
    try:
        summary = run_monitor(read, sys.stdout, as_json=as_json)
    except KeyboardInterrupt:
        return
    click.echo(summary.line(), err=True)


@main.command(
    "verify-billing", short_help=f"Check a billing response's signatures {GATEWAY_EXTRA}."
)
@click.argument("file", metavar="FILE")
@click.option(
    "--ca",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The gateway's root CA certificate, PEM (`x1p1 gateway ca` prints it).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify_billing(file: str, ca: Path, as_json: bool) -> None:
    """Check the signatures of a saved billing response against the gateway's root CA.

    FILE holds the JSON body of GET /api/meters/{id}/billing (- reads standard input).
    Prints whether the signing certificate is trusted and each reading that fails.

    \b
    Exit codes: 0 every reading verified; 1 a reading or the certificate failed;
    2 usage error, unreadable or malformed file, or the gateway extra not installed.
    """
    need_gateway_extra("verify-billing")
    try:
        from x1p1.gateway.billing_signature import verify_billing as verify
    except ImportError:
        gateway_extra_missing("verify-billing")
    limit = 64 * 1024 * 1024
    try:
        if file == "-":
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with open(file, "rb") as handle:
                data = handle.read(limit + 1)
        root = ca.read_bytes()
    except OSError as exc:
        fail(f"cannot read {exc.filename or file}: {exc.strerror or exc}", 2)
    if len(data) > limit:
        fail(f"{file} is larger than 64 MiB: not a billing response", 2)
    try:
        report = verify(data, root)
    except BillingVerificationError as exc:
        fail(f"{file}: {exc}", 2)
    click.echo(json.dumps(report.to_json(), indent=2) if as_json else report.summary())
    sys.exit(0 if report.ok else 1)


@main.group()
def serial() -> None:
    """Serial ports for the P1 output: list them, or write a udev rule for one."""


@serial.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of the ports.")
def serial_list(as_json: bool) -> None:
    """List serial ports with vendor, product, serial number and /dev/serial/by-id link."""
    from x1p1.converter.serial_ports import list_ports

    try:
        ports = list_ports()
    except X1P1Error as error:
        fail(error)
    if as_json:
        click.echo(json.dumps([port.to_json() for port in ports], indent=2))
        return
    if not ports:
        click.echo("No serial ports found.", err=True)
        return
    for port in ports:
        ids = f"{port.vendor_id}:{port.product_id}" if port.vendor_id else ""
        name = " ".join(p for p in (port.vendor, port.product) if p) or port.driver or ""
        click.echo(f"{port.device:<16} {ids:<9} {name}")
        details = [f"serial {port.serial_number}"] if port.serial_number else []
        details += [f"interface {port.interface}"] if port.interface else []
        details += [f"driver {port.driver}"] if port.driver and ids else []
        if details:
            click.echo(f"{'':<16} {', '.join(details)}")
        if port.by_id:
            click.echo(f"{'':<16} {port.by_id}")


@serial.command("udev-rule")
@click.argument("port", metavar="PORT")
@click.option(
    "--name",
    default="x1p1-p1",
    show_default=True,
    metavar="NAME",
    help="The device name to give it: x1p1-p1-2 for a second P1 output ([[output]]).",
)
def serial_udev_rule(port: str, name: str) -> None:
    """Print a udev rule that names the USB adapter behind PORT /dev/x1p1-p1.

    PORT is a device (/dev/ttyUSB0), a /dev/serial/by-id link or another symlink. The
    rule matches the adapter's USB vendor, product and serial number, so the name
    follows it to any USB socket. Install it with:

    \b
      x1p1 serial udev-rule PORT | sudo tee /etc/udev/rules.d/99-x1p1.rules
      sudo udevadm control --reload
      sudo udevadm trigger --action=add --subsystem-match=tty

    A second adapter, for a second P1 device: `--name x1p1-p1-2`, into
    /etc/udev/rules.d/99-x1p1-p1-2.rules (the rule's comments say so).
    """
    from x1p1.converter.serial_ports import udev_rule

    try:
        click.echo(udev_rule(port, name=name), nl=False)
    except X1P1Error as error:
        fail(error)


# --- the converter: pair, unpair, run, status ---------------------------------------------

_PAIR_EPILOG = """\b
Exit codes:
  0  approved: the token is saved
  1  another error (a clear message on standard error)
  2  usage error (bad option, argument or CA file)
  3  denied on the meter or in the portal
  4  expired: nobody approved it within 10 minutes
  5  throttled: too many denials within an hour; try again later
  6  unreachable: no gateway found, or it did not answer
  7  TLS failed: the certificate did not verify (--ca, --tls-name), or the
     gateway offers no TLS 1.3
  8  X1 is switched off by the grid operator
  12 the state directory cannot be written (read-only, no permission: sudo)
  130 interrupted (Ctrl-C)"""


def _dir_option(help_text: str, *, readable: bool = True) -> Callable[[Any], Any]:
    """A ``--state-dir DIR`` option with its own help text; ``readable=False`` leaves a
    directory this user may not read to the command (the converter's: its one sentence
    and exit code, x1p1/converter/state.py), not click's usage error."""
    return click.option(
        "--state-dir",
        type=click.Path(file_okay=False, readable=readable, path_type=Path),
        default=None,
        help=help_text,
    )


_state_dir_option = _dir_option(
    "Where the token and status live [default: the config file's state_dir, "
    "$X1P1_STATE_DIR, systemd's $STATE_DIRECTORY, or ~/.local/state/x1p1].",
    readable=False,
)


def _state_dir(state_dir: Path | None) -> Path:
    """``--state-dir``, else the config file's ``state_dir`` (as `x1p1 run` reads it)."""
    from x1p1.converter.config import load_run_config
    from x1p1.exceptions import ConfigError

    if state_dir is not None:
        return state_dir
    try:
        return load_run_config().state_dir
    except ConfigError as error:
        fail(error, 2)


_tls_name_option = click.option(
    "--tls-name",
    metavar="NAME",
    help="Connect by address but verify the gateway's certificate for NAME [default: the "
    "mDNS host name, the --gateway host name, or the saved pairing's].",
)


def _tls_name(tls_name: str | None) -> str | None:
    """``--tls-name`` checked (a host name or an address), or a usage error."""
    from x1p1.converter.config import parse_tls_name
    from x1p1.exceptions import ConfigError

    try:
        return None if tls_name is None else parse_tls_name(tls_name)
    except ConfigError as error:
        fail(error, 2)


@main.command(epilog=_PAIR_EPILOG)
@click.option(
    "--gateway",
    metavar="HOST[:PORT]|URL",
    help="The gateway's host name or address, or a wss:// or https:// URL [default: find "
    "it by mDNS].",
)
@click.option(
    "--ca",
    type=click.Path(path_type=Path),
    help="The gateway's root certificate (PEM) [default: the system's trust store].",
)
@click.option("--name", help="The name the meter shows [default: x1p1 on <hostname>].")
@_tls_name_option
@click.option(
    "--profiles",
    metavar="P,…",
    default="P1",
    show_default=True,
    help="The profiles to ask for: P1, or E-REALTIME,G-REALTIME,PQ-REALTIME to have "
    "telegrams built from realtime values (run --source), or any mix.",
)
@click.option(
    "--api-base",
    metavar="PATH",
    help="Where the gateway serves the X1 API [default: the config's api_base, the "
    "--gateway URL's path, the mDNS TXT api=, or /api].",
)
@_state_dir_option
def pair(
    gateway: str | None,
    ca: Path | None,
    name: str | None,
    tls_name: str | None,
    profiles: str,
    api_base: str | None,
    state_dir: Path | None,
) -> None:
    """Ask the gateway for a token (P1, or --profiles) and wait while you approve it on the meter.

    The request shows on the meter's display (X1 §5.1.5); approve it with the meter's
    button or in the customer portal within 10 minutes. The token is saved (mode 0600)
    with the gateway's host name, serial and CA; a running `x1p1 run` picks it up.
    """
    import asyncio

    from x1p1.converter import pairing as pairing_module
    from x1p1.converter.config import GatewayAddress, ca_file_problem, load_run_config
    from x1p1.converter.state import prepare_state_dir
    from x1p1.exceptions import ConfigError

    try:
        address = GatewayAddress.parse(gateway) if gateway is not None else None
        config = load_run_config(None, {"api_base": api_base, "state_dir": state_dir})
    except ConfigError as error:
        fail(error, 2)
    verify_as = _tls_name(tls_name) or config.tls_name
    problem = ca_file_problem(ca) if ca is not None else None
    if problem is not None:
        fail(f"--ca {str(ca)!r} is not a usable CA file: {problem}", 2)
    from x1p1.x1.profiles import parse_profiles, sorted_profiles

    try:
        wanted = parse_profiles(p.strip().upper() for p in profiles.split(",") if p.strip())
    except X1P1Error as error:
        fail(f"--profiles {profiles!r}: {str(error).removeprefix('profiles: ')}", 2)
    name = name if name is not None else pairing_module.default_request_name()
    if not 1 <= len(name) <= 64 or not name.isprintable():
        fail("--name must be 1 to 64 printable characters", 2)
    directory = config.state_dir
    try:  # before the gateway is asked: a token that cannot be saved is lost on the meter
        prepare_state_dir(directory)
    except StateDirError as error:
        fail(error, pairing_module.PairExit.STATE_DIR)
    countdown = pairing_module.Countdown(sys.stdout)
    try:
        where = "by mDNS" if address is None else str(address)
        click.echo(f"Looking for the gateway ({where}) ...")
        endpoint = asyncio.run(
            pairing_module.resolve_endpoint(
                address,
                api_base=config.api_base,
                token_requests_path=config.token_requests_path,
            )
        )
        endpoint = endpoint.with_tls_name(verify_as)
        asked = ", ".join(sorted_profiles(wanted))
        click.echo(f"Asking {endpoint.describe()} for a token ({asked}) named '{name}'.")
        result = pairing_module.pair(
            directory,
            endpoint,
            ca_file=ca,
            name=name,
            on_request=countdown.request,
            on_tick=countdown.tick,
            profiles=wanted,
        )
    except KeyboardInterrupt:
        countdown.close()
        fail("interrupted; the request stays on the meter until it expires", 130)
    except ConfigError as error:
        countdown.close()
        fail(error, 2)
    except X1P1Error as error:
        countdown.close()
        fail(error, pairing_module.exit_code_for(error))
    countdown.close()
    click.echo(f"Paired with {result.describe()}.")
    click.echo(f"The token is saved in {directory}. Now start the converter: x1p1 run")


@main.command(
    epilog="""\b
Exit codes:
  0  unpaired, or there was nothing to do
  1  error (a clear message on standard error)
  2  bad config file
  12 the state directory cannot be written (read-only, no permission: sudo)"""
)
@_state_dir_option
def unpair(state_dir: Path | None) -> None:
    """Revoke the token on the gateway and forget it here (works when the gateway is gone)."""
    from x1p1.converter.pairing import unpair as run_unpair
    from x1p1.converter.state import check_state_dir

    directory = _state_dir(state_dir)
    try:
        check_state_dir(directory, write=True)
        _, sentence = run_unpair(directory)
    except StateDirError as error:
        fail(error, RUN_EXIT[StateDirError])
    except X1P1Error as error:
        fail(error)
    click.echo(sentence)


@main.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The config file [default: $X1P1_CONFIG, or /etc/x1p1/config.toml if it exists].",
)
@click.option("--gateway", metavar="HOST[:PORT]|URL", help="Use this address, not the paired one.")
@click.option(
    "--ca",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The gateway's root certificate (PEM) [default: the one saved when pairing].",
)
@_tls_name_option
@click.option(
    "--serial",
    metavar="PORT|URL",
    help="The P1 output: a device, a pyserial URL, or none (only --tcp) [default: /dev/x1p1-p1].",
)
@click.option(
    "--data-request",
    type=click.Choice(["ignore", "cts", "dsr"]),
    help="Send only while this input is asserted (P1 §5.7.1) [default: ignore].",
)
@click.option("--tcp", metavar="HOST:PORT", help="Also serve raw telegrams to TCP clients.")
@click.option(
    "--source",
    type=click.Choice(["auto", "legacy-p1", "realtime"]),
    help="Relay legacy P1, build telegrams from realtime values, or choose by the token's "
    "profiles and what the gateway serves [default: the config's source, or auto].",
)
@click.option(
    "--api-base",
    metavar="PATH",
    help="Where the gateway serves the X1 API [default: the config's api_base, the "
    "--gateway URL's path, the mDNS TXT api=, or /api].",
)
@_state_dir_option
@click.pass_context
def run(
    ctx: click.Context,
    config_file: Path | None,
    gateway: str | None,
    ca: Path | None,
    tls_name: str | None,
    serial: str | None,
    data_request: str | None,
    tcp: str | None,
    source: str | None,
    api_base: str | None,
    state_dir: Path | None,
) -> None:
    """Relay legacy P1 from the paired gateway to the serial port, until stopped.

    Without legacy P1 (a gateway that lacks it, or a token granted only E-REALTIME,
    G-REALTIME and PQ-REALTIME) it builds DSMR 5.0.2 telegrams from realtime values
    (--source; `auto` picks and switches back when legacy P1 returns). Several P1
    devices: [[output]] tables in the config (docs/config.example.toml).

    It rides out faults by itself: a lost connection is retried (backoff up to 30 s,
    then the gateway is looked up by mDNS by its serial); X1 switched off is retried
    every 60 s; a missing serial port is waited for. A refused token or a certificate
    that does not verify stops relaying, is never retried in a loop, and relaying
    resumes once `x1p1 pair` saves a new pairing. A gateway that speaks only TLS 1.2 is
    tried again every 60 s. `x1p1 status` shows where it is.

    \b
    Exit codes:
      0  stopped by SIGTERM or Ctrl-C
      1  error (a clear message on standard error)
      2  bad option or config file (a --ca file: missing, not PEM, not a CA)
      10 --tcp's port is in use, or not permitted (below 1024)
      11 --serial names something that is no serial device (a file, /dev/null)
      12 the state directory cannot be written (read-only, no permission)
      13 another x1p1 run uses the same state directory (its pid is named)
    """
    from x1p1.converter.config import load_run_config
    from x1p1.converter.supervisor import run_converter
    from x1p1.exceptions import ConfigError
    from x1p1.logs import setup_logging

    overrides = {
        "gateway": gateway,
        "ca": ca,
        "tls_name": tls_name,
        "serial": serial,
        "data_request": data_request,
        "tcp": tcp,
        "source": source,
        "api_base": api_base,
        "state_dir": state_dir,
    }
    try:
        config = load_run_config(config_file, overrides)
    except ConfigError as error:
        fail(error, 2)
    if ctx.meta.get("x1p1.verbosity", 0) == 0:
        setup_logging(level=config.log_level)
    try:
        code = run_converter(config)
    except ConfigError as error:
        fail(error, 2)
    except X1P1Error as error:
        fail(error, next((c for t, c in RUN_EXIT.items() if isinstance(error, t)), 1))
    sys.exit(code)


@main.command()
@click.option(
    "--gateway",
    metavar="HOST[:PORT]|URL",
    help="The gateway to examine [default: the config file's, the paired one, or mDNS].",
)
@click.option(
    "--ca",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The gateway's root certificate (PEM) [default: the one saved when pairing].",
)
@_tls_name_option
@_state_dir_option
@click.option(
    "--request",
    is_flag=True,
    help="Also make a token request (it shows on the meter: deny it there).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--api-base",
    metavar="PATH",
    help="Where the gateway serves the X1 API [default: the config's api_base, the "
    "--gateway URL's path, the saved pairing's, the mDNS TXT api=, or /api].",
)
def doctor(
    gateway: str | None,
    ca: Path | None,
    tls_name: str | None,
    state_dir: Path | None,
    request: bool,
    as_json: bool,
    api_base: str | None,
) -> None:
    """Examine a gateway and report, one line per item, whether relaying would work.

    Shows the mDNS records and addresses, the TLS version, cipher and certificate chain
    (with the X.509-strict checks it fails), the clock skew, each endpoint's status and
    the shape of its JSON answers (keys and types, never values) and, with a saved
    token, a framing verdict on the legacy-P1 telegrams. It calls the endpoints `x1p1
    pair` and `x1p1 run` call (--api-base, the config's api_base, token_requests_path and
    legacy_p1_path, a --gateway URL's path, the mDNS TXT api=). Each line says ok,
    tolerated or blocks relaying, with the config key that fixes it. No token, reading
    or full serial number is shown: paste the report into a bug report as it is. No
    token request is made unless --request is given.

    \b
    Exit codes:
      0  relaying would work
      1  something blocks relaying (the lines marked so say what)
      2  bad option or config file
    """
    import asyncio

    from x1p1.converter.config import load_run_config
    from x1p1.converter.doctor import DoctorOptions, examine
    from x1p1.exceptions import ConfigError

    overrides = {
        "gateway": gateway,
        "ca": ca,
        "tls_name": tls_name,
        "state_dir": state_dir,
        "api_base": api_base,
    }
    try:
        config = load_run_config(None, overrides)
    except ConfigError as error:
        fail(error, 2)
    options = DoctorOptions(
        state_dir=config.state_dir,
        gateway=config.gateway,
        ca=config.ca,
        tls_name=config.tls_name,
        request=request,
        api_base=config.api_base,
        token_requests_path=config.token_requests_path,
        legacy_p1_path=config.legacy_p1_path,
        source=config.data_source,
    )
    report = asyncio.run(examine(options))
    click.echo(json.dumps(report.to_json(), indent=2) if as_json else report.render())
    sys.exit(report.exit_code)


@main.command()
@_state_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(state_dir: Path | None, as_json: bool) -> None:
    """Show the pairing and what the running converter reports.

    The saved pairing (gateway, serial, token expiry), the address in use, connection
    state, the last error and its time, last telegram, counts, latency, serial port and
    Data Request state.

    \b
    Exit codes:
      0  the converter runs, is connected, and its outputs take telegrams
      3  it is not running, not paired or not connected, or every telegram is dropped
         as invalid (dropping-invalid)
      4  it is connected but an output is absent or stuck (named on standard error)
      12 the state directory cannot be read (the service's: run it with sudo)
    """
    from x1p1.converter.state import output_problems, render_status, status_report

    try:
        report = status_report(_state_dir(state_dir))
    except StateDirError as error:
        fail(error, RUN_EXIT[StateDirError])
    click.echo(json.dumps(report, indent=2) if as_json else render_status(report))
    problems = output_problems(report)
    if report.get("status_error"):
        click.echo(f"x1p1: {report['status_error']}", err=True)
    for problem in problems:
        click.echo(f"x1p1: {problem}", err=True)
    if not (report.get("running") and report.get("connection") == "connected"):
        sys.exit(3)
    sys.exit(4 if problems else 0)


# --- the appliance: install, uninstall ------------------------------------------------------

_INSTALL_EPILOG = """\b
Exit codes:
  0  installed (or already so)
  1  a file or command failed (a clear message on standard error)
  2  bad option (--serial, --tcp), or several adapters and no terminal to ask
  14 not root: run it with sudo (or give --root DIR)"""


def _need_root(root: Path, command: str) -> None:
    import os

    if root.resolve() == Path("/") and os.geteuid() != 0:
        fail(
            f"x1p1 {command} writes to /etc and /var/lib: run it as root (sudo x1p1 {command})", 14
        )


def _choose_port(ports: list[Any]) -> Any:
    """Ask which of several USB serial adapters drives the P1 line."""
    if not sys.stdin.isatty():
        names = ", ".join(port.device for port in ports)
        fail(f"several USB serial adapters ({names}): give --serial PORT", 2)
    click.echo("Several USB serial adapters are plugged in:")
    for number, port in enumerate(ports, 1):
        name = " ".join(p for p in (port.vendor, port.product) if p) or port.driver or ""
        serial = f", serial {port.serial_number}" if port.serial_number else ""
        click.echo(f"  {number}  {port.device}  {name}{serial}")
    choice = click.prompt(
        "Which one drives the P1 line", type=click.IntRange(1, len(ports)), default=1
    )
    return ports[choice - 1]


@main.command(epilog=_INSTALL_EPILOG)
@click.option(
    "--serial",
    metavar="PORT|none",
    help="The P1 adapter: gets a udev rule naming it /dev/x1p1-p1 [default: the only USB "
    "serial adapter plugged in; asks when there are several]; none: only --tcp.",
)
@click.option("--tcp", metavar="HOST:PORT", help="Also serve raw telegrams to TCP clients.")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/"),
    help="Write into this directory instead of / (tests, image builders); runs nothing.",
)
@click.option("--force", is_flag=True, help="Replace files the user edited since.")
def install(serial: str | None, tcp: str | None, root: Path, force: bool) -> None:
    """Set x1p1 up as a service: unit, udev rule, config, state directory; start it.

    Writes /etc/systemd/system/x1p1.service, /etc/udev/rules.d/99-x1p1.rules (for the
    adapter), /etc/x1p1/config.toml and /var/lib/x1p1 (mode 0700), links
    /usr/local/bin/x1p1, reloads udev and systemd, and enables and starts the service
    when systemd runs. Run it again at any time: it changes only what differs, and
    keeps a file you edited (--force replaces it). Then: sudo x1p1 pair.
    """
    from x1p1.converter import install as installer
    from x1p1.exceptions import ConfigError

    _need_root(root, "install")
    options = installer.InstallOptions(root=root, serial=serial, tcp=tcp, force=force)
    try:
        steps = installer.install(options, choose=_choose_port)
    except (ConfigError, NotASerialDevice) as error:
        fail(error, 2)
    except X1P1Error as error:
        fail(error)
    for step in steps:
        click.echo(step.line())
    click.echo("")
    click.echo("Next: sudo x1p1 pair   (approve the request on the meter with its button)")
    click.echo("Then: sudo x1p1 status (the pairing, the connection, the last error, counts)")


@main.command(epilog="\b\nExit codes:\n  0  removed\n  1  a file or command failed\n  14 not root")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/"),
    help="Remove from this directory instead of / (tests, image builders).",
)
@click.option(
    "--purge", is_flag=True, help="Also remove the token, the state and an edited config."
)
def uninstall(root: Path, purge: bool) -> None:
    """Stop and remove the service and what `x1p1 install` wrote.

    The token and state in /var/lib/x1p1 stay unless --purge (the gateway keeps the
    token until it expires: `sudo x1p1 unpair` first revokes it there).
    """
    from x1p1.converter import install as installer

    _need_root(root, "uninstall")
    try:
        steps = installer.uninstall(root, purge=purge)
    except X1P1Error as error:
        fail(error)
    for step in steps:
        click.echo(step.line())


# --- the embedded gateway: gateway serve|ca, meter …, operator … --------------------------


_gateway_dir_option = _dir_option(
    "The embedded gateway's state directory [default: "
    "$XDG_STATE_HOME/x1p1/gateway or ~/.local/state/x1p1/gateway]."
)


def _gateway_dir(state_dir: Path | None) -> Path:
    from x1p1.gateway.app import default_state_dir as gateway_default

    return state_dir if state_dir is not None else gateway_default()


@main.group(short_help=f"The embedded DSMR6 gateway {GATEWAY_EXTRA}.")
def gateway() -> None:
    """The embedded DSMR6 gateway: simulated meters behind a real X1 API.

    Needs the gateway extra: pip install 'x1p1[gateway]'.
    """


@gateway.command("serve")
@_gateway_dir_option
@click.option(
    "--host",
    default="0.0.0.0",
    show_default=True,
    help="Address to listen on; 127.0.0.1 keeps it to this machine (no mDNS).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8443,
    show_default=True,
    help="HTTPS/WSS port; 0 picks a free one (printed on start).",
)
@click.option(
    "--hostname",
    default="X1-interface",
    show_default=True,
    help="mDNS base name: NAME.local, or NAME-1.local, -2 … when taken.",
)
@click.option("--no-mdns", is_flag=True, help="Do not advertise on mDNS.")
@click.option(
    "--auto-approve",
    is_flag=True,
    help="Approve every token request at once (demos; never on a shared network).",
)
@click.option(
    "--speed",
    type=click.FloatRange(min=0.001, max=100000),
    default=1.0,
    show_default=True,
    help="Run the meters' clock this many times faster.",
)
@click.option(
    "--seed",
    type=int,
    default=1,
    show_default=True,
    help="Seed of the simulated household, PV system and gas use.",
)
def gateway_serve(
    state_dir: Path | None,
    host: str,
    port: int,
    hostname: str,
    no_mdns: bool,
    auto_approve: bool,
    speed: float,
    seed: int,
) -> None:
    """Run the embedded gateway until SIGINT or SIGTERM.

    HTTPS and WSS on one port with TLS 1.3 and a certificate from the gateway's own root
    CA (`x1p1 gateway ca` prints it). The first line printed is
    `x1p1 gateway listening on https://ADDRESS:PORT`. Approve token requests with
    `x1p1 meter approve`, as with the meter's button.
    """
    import asyncio

    need_gateway_extra("gateway serve")
    from x1p1.gateway.app import GatewayConfig, run_gateway

    config = GatewayConfig(
        state_dir=_gateway_dir(state_dir),
        host=host,
        port=port,
        hostname=hostname,
        mdns=not no_mdns,
        auto_approve=auto_approve,
        speed=speed,
        seed=seed,
    )
    try:
        asyncio.run(run_gateway(config))
    except KeyboardInterrupt:
        return
    except X1P1Error as error:
        fail(error)


@gateway.command("ca")
@_gateway_dir_option
def gateway_ca(state_dir: Path | None) -> None:
    """Print the gateway's root CA certificate (PEM): what clients trust (--ca)."""
    need_gateway_extra("gateway ca")
    from x1p1.gateway.pki import root_ca_pem

    try:
        click.echo(root_ca_pem(_gateway_dir(state_dir)).decode("ascii"), nl=False)
    except X1P1Error as error:
        fail(error)


def _control(state_dir: Path | None) -> Any:
    """The running gateway's control socket; the lean install's one sentence without the
    gateway extra."""
    need_gateway_extra(click.get_current_context().command_path.partition(" ")[2])
    from x1p1.gateway.control_client import ControlClient

    return ControlClient(_gateway_dir(state_dir))


def _ask(state_dir: Path | None, call: Callable[[Any], Any]) -> Any:
    """Run ``call(control)`` on the running gateway's control socket; a clear error and
    exit 1 if it fails."""
    try:
        with _control(state_dir) as control:
            return call(control)
    except X1P1Error as error:
        fail(error)


_KIND_WORDS = {"device": "device token", "login": "portal login", "elevation": "admin access"}


def _print_request(request: dict[str, Any]) -> None:
    what = _KIND_WORDS.get(str(request.get("kind")), str(request.get("kind")))
    if request.get("kind") == "device":
        what += " " + ",".join(request["profiles"])
    click.echo(
        f"code {request['code']}  {request['name']!r}  {what}  "
        f"({request['status']}, {request['expires_in']} s left)  id {request['request_id']}"
    )
    if request.get("user_agent"):
        click.echo(f"    User-Agent: {request['user_agent']}")


def _print_grant(grant: dict[str, Any]) -> None:
    if grant.get("kind") == "session":
        what = "portal session"
        if grant.get("elevated_until"):
            what += f", admin access until {grant['elevated_until']}"
    else:
        what = "device token " + ",".join(grant["profiles"])
    used = grant.get("last_used") or "never"
    click.echo(
        f"{grant['id']}  {grant['name']!r}  {what}  (last used {used}, "
        f"valid until {grant['expires_at']})"
    )


def _code_option(action: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--code",
        metavar="NNNN",
        help=f"{action} the request that shows these four digits on the display.",
    )


def _pick(
    state_dir: Path | None,
    request_id: str | None,
    code: str | None,
    call: Callable[[Any], Any],
) -> Any:
    """Run a button press; when several requests wait and none was named, list them and
    ask for --code (exit 2)."""
    from x1p1.exceptions import SeveralWaiting

    if request_id is not None and code is not None:
        fail("name the request by ID or by --code, not both", 2)
    try:
        with _control(state_dir) as control:
            return call(control)
    except SeveralWaiting as error:
        click.echo(f"x1p1: {error}", err=True)
        for request_id_, code_, kind, name in error.waiting:
            what = _KIND_WORDS.get(kind, kind)
            click.echo(f"  code {code_}  {name!r}  {what}  id {request_id_}", err=True)
        sys.exit(2)
    except X1P1Error as error:
        fail(error)


@main.group(short_help=f"The embedded gateway's meter {GATEWAY_EXTRA}.")
def meter() -> None:
    """The meter's display and buttons of a running embedded gateway (X1 §5.1.5, §5.2).

    Needs the gateway extra: pip install 'x1p1[gateway]'.
    """


@meter.command("list")
@_gateway_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def meter_list(state_dir: Path | None, as_json: bool) -> None:
    """Show what waits on the meter, oldest first: device token requests, portal logins
    and admin-access requests, each with the four-digit code the display shows. The
    display shows the first one."""
    requests = _ask(state_dir, lambda control: control.requests())
    if as_json:
        click.echo(json.dumps(requests, indent=2))
    elif not requests:
        click.echo("Nothing is waiting on the meter.")
    for request in [] if as_json else requests:
        _print_request(request)


@meter.command("approve")
@click.argument("request_id", metavar="[ID]", required=False)
@_code_option("Approve")
@_gateway_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def meter_approve(
    request_id: str | None, code: str | None, state_dir: Path | None, as_json: bool
) -> None:
    """Approve a device token request, portal login or admin access (the meter's button).

    Without ID or --code it acts only when exactly one request waits; with several it
    lists them and asks for --code. A device gets the profiles it asked for, as a whole
    (X1 §5.1.5); change them later in the portal (§5.1.6).

    \b
    Exit codes: 0 approved; 1 no such request, or no gateway running; 2 several wait.
    """
    result = _pick(state_dir, request_id, code, lambda c: c.approve(request_id, code))
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    request = result["request"]
    if "token" not in result:  # a portal login or admin access, approved on the meter
        what = "login" if result.get("kind") == "login" else "admin access (60 minutes)"
        click.echo(f"Approved the portal {what} of {request['name']!r} (code {request['code']}).")
        return
    token = result["token"]
    click.echo(
        f"Approved {request['name']!r} (code {request['code']}): token {token['token_id']} "
        f"with {', '.join(token['profiles'])}, valid until {token['expires_at']}."
    )


@meter.command("deny")
@click.argument("request_id", metavar="[ID]", required=False)
@_code_option("Deny")
@_gateway_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def meter_deny(
    request_id: str | None, code: str | None, state_dir: Path | None, as_json: bool
) -> None:
    """Deny a device token request, portal login or admin access (the meter's button).

    Without ID or --code it acts only when exactly one request waits.

    \b
    Exit codes: 0 denied; 1 no such request, or no gateway running; 2 several wait.
    """
    result = _pick(state_dir, request_id, code, lambda c: c.deny(request_id, code))
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        request = result["request"]
        click.echo(f"Denied {request['name']!r} (code {request['code']}).")


@meter.command("devices")
@_gateway_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def meter_devices(state_dir: Path | None, as_json: bool) -> None:
    """Show the devices with a token and the browsers logged in to the portal (X1 §5.2)."""
    grants = _ask(state_dir, lambda control: control.devices())
    if as_json:
        click.echo(json.dumps(grants, indent=2))
    elif not grants:
        click.echo("No device holds a token and no browser is logged in.")
    for grant in [] if as_json else grants:
        _print_grant(grant)


@meter.command("revoke")
@click.argument("grant_id", metavar="ID")
@_gateway_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def meter_revoke(grant_id: str, state_dir: Path | None, as_json: bool) -> None:
    """Revoke a device's token or end a portal session, by the ID `meter devices` shows
    (X1 §5.2); its open connections close."""
    result = _ask(state_dir, lambda control: control.revoke(grant_id))
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(f"Revoked {result['device']['name']!r} ({result['device']['id']}).")


@meter.command("comlog")
@_gateway_dir_option
@click.option("--since", metavar="TIME", help="Only entries from this RFC 3339 time on.")
@click.option(
    "--limit",
    type=click.IntRange(1, 100000),
    default=1000,
    show_default=True,
    help="At most this many of the newest entries.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def meter_comlog(state_dir: Path | None, since: str | None, limit: int, as_json: bool) -> None:
    """Show the comlog (X1 §2.2): every access to the meter's data, oldest first."""
    need_gateway_extra("meter comlog")
    from x1p1.gateway.comlog import ComlogEntry

    entries = _ask(state_dir, lambda control: control.comlog(since, limit))
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    for entry in entries:
        click.echo(ComlogEntry.parse(entry).describe())
    if not entries:
        click.echo("The comlog is empty.")


@meter.command("block-history")
@_gateway_dir_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def meter_block_history(state_dir: Path | None, yes: bool, as_json: bool) -> None:
    """Block the history, as the meter's button combination does (X1 §11, §12.1).

    Irreversible: no measurement or billing reading from before now is ever shown again
    by the API, the portal or a download; every device's token and every portal session
    is revoked (open connections close). New history accrues from now on.

    \b
    Exit codes: 0 blocked; 1 not confirmed or no gateway running.
    """
    if not yes and not click.confirm(
        "Block all history from before now and revoke every device and portal login? "
        "This cannot be undone",
        default=False,
    ):
        fail("not blocked", 1)
    result = _ask(state_dir, lambda control: control.block_history())
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(
            f"History blocked at {result['blocked_at']}; "
            f"{result['tokens_revoked']} device token(s) revoked."
        )


@main.group(short_help=f"The embedded gateway's grid operator {GATEWAY_EXTRA}.")
def operator() -> None:
    """The grid operator's remote functions on a running embedded gateway (X1 §12.3).

    Needs the gateway extra: pip install 'x1p1[gateway]'.
    """


@operator.command("disable")
@_gateway_dir_option
def operator_disable(state_dir: Path | None) -> None:
    """Switch X1 off: every endpoint answers 503 and open sockets close with 4503."""
    _operator(state_dir, "disable")


@operator.command("enable")
@_gateway_dir_option
def operator_enable(state_dir: Path | None) -> None:
    """Switch X1 back on."""
    _operator(state_dir, "enable")


@operator.command("read")
@_gateway_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the reading as JSON.")
def operator_read(state_dir: Path | None, as_json: bool) -> None:
    """Read the meters remotely (X4), as the grid operator does; the comlog records it."""
    _operator(state_dir, "read", as_json)


def _operator(state_dir: Path | None, action: str, as_json: bool = False) -> None:
    result = _ask(state_dir, lambda control: control.operator(action))
    if as_json:
        click.echo(json.dumps(result, indent=2))
    elif action == "read":
        for reading in result["meters"]:
            values = ", ".join(f"{k} {v}" for k, v in reading["values"].items())
            click.echo(f"{reading['equipment_id']} at {reading['t']}: {values}")
    else:
        state = "on" if result["x1_enabled"] else "off"
        click.echo(f"X1 is {state}{'' if result['changed'] else ' (it already was)'}.")


@main.command(short_help=f"Show the whole chain on this machine {GATEWAY_EXTRA}.")
@click.option(
    "--telegrams",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after this many telegrams reached the P1 end [default: run until Ctrl-C].",
)
@click.option(
    "--speed",
    type=click.FloatRange(min=0.01, max=1000.0),
    default=1.0,
    show_default=True,
    help="Run the simulated meters' clock this many times faster.",
)
@click.pass_context
def demo(ctx: click.Context, telegrams: int | None, speed: float) -> None:
    """Show the whole chain on this machine: gateway, pairing, converter, P1 reader.

    Starts the embedded gateway on 127.0.0.1 (auto-approve, no mDNS), pairs a P1 token,
    runs the converter into one end of a pty pair and reads the other end as a P1 dongle
    would, with a live status line. Ctrl-C stops everything and leaves nothing running.
    Exit codes: 0 every telegram at the P1 end valid, 1 otherwise or on an error, 2 the
    gateway extra is not installed.
    """
    import asyncio

    need_gateway_extra("demo")
    from x1p1.demo import run_demo
    from x1p1.logs import setup_logging

    if ctx.meta.get("x1p1.verbosity", 0) == 0:
        setup_logging(level="warning")  # the screen shows the chain; -v shows its logs
    try:
        result = asyncio.run(run_demo(sys.stdout, telegrams=telegrams, speed=speed))
    except X1P1Error as error:
        fail(error)
    sys.exit(0 if result.invalid == 0 and result.valid > 0 else 1)


if __name__ == "__main__":  # pragma: no cover
    main()
