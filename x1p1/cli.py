"""The `x1p1` command line: click commands, each a few lines that build a config and call in.

Commands and options are an interface that users and scripts rely on
(architecture.md, "The command line"). Exit codes:

\b
  0  success
  1  error (a clear message on standard error)
  2  usage error (bad option or argument)
  Pairing (`x1p1 pair`) adds its own codes; see `x1p1 pair --help`.
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
from x1p1.exceptions import BillingVerificationError, X1P1Error


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="x1p1")
@click.option("-v", "--verbose", count=True, help="Log more: -v x1p1's debug, -vv libraries' too.")
@click.option("-q", "--quiet", count=True, help="Log less: -q warnings and errors, -qq errors.")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: int) -> None:
    """x1p1: keep P1 dongles working on DSMR6 meters (X1 to P1), with an embedded gateway.

    \b
    Exit codes: 0 success, 1 error, 2 usage error; `x1p1 pair --help` lists its own.
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
    summary on standard error. Exits 0 at the end of input; Ctrl-C stops a port.
    """
    from x1p1.converter.monitor import monitor as run_monitor

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
    try:
        summary = run_monitor(read, sys.stdout, as_json=as_json)
    except KeyboardInterrupt:
        return
    click.echo(summary.line(), err=True)


@main.command("verify-billing")
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
    try:
        from x1p1.gateway.billing_signature import verify_billing as verify
    except ImportError as exc:
        fail(f"verify-billing needs the gateway extra: pip install 'x1p1[gateway]' ({exc})", 2)
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
  7  bad certificate: the gateway's certificate did not verify (--ca, host name)
  8  X1 is switched off by the grid operator
  130 interrupted (Ctrl-C)"""


def _dir_option(help_text: str) -> Callable[[Any], Any]:
    """A ``--state-dir DIR`` option with its own help text."""
    return click.option(
        "--state-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help=help_text,
    )


_state_dir_option = _dir_option(
    "Where the token and status live [default: the config file's state_dir, "
    "$X1P1_STATE_DIR, systemd's $STATE_DIRECTORY, or ~/.local/state/x1p1]."
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
        raise  # not reached


@main.command(epilog=_PAIR_EPILOG)
@click.option(
    "--gateway",
    metavar="HOST[:PORT]|URL",
    help="The gateway's host name or address, or a wss:// or https:// URL [default: find "
    "it by mDNS].",
)
@click.option(
    "--ca",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The gateway's root certificate (PEM) [default: the system's trust store].",
)
@click.option("--name", help="The name the meter shows [default: x1p1 on <hostname>].")
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
    from x1p1.converter.config import GatewayAddress, load_run_config
    from x1p1.exceptions import ConfigError

    try:
        address = GatewayAddress.parse(gateway) if gateway is not None else None
        config = load_run_config(None, {"api_base": api_base, "state_dir": state_dir})
    except ConfigError as error:
        fail(error, 2)
    from x1p1.x1.profiles import parse_profiles, sorted_profiles

    try:
        wanted = parse_profiles(p.strip().upper() for p in profiles.split(",") if p.strip())
    except X1P1Error as error:
        fail(f"--profiles {profiles!r}: {str(error).removeprefix('profiles: ')}", 2)
    name = name if name is not None else pairing_module.default_request_name()
    if not 1 <= len(name) <= 64 or not name.isprintable():
        fail("--name must be 1 to 64 printable characters", 2)
    directory = config.state_dir
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


@main.command()
@_state_dir_option
def unpair(state_dir: Path | None) -> None:
    """Revoke the token on the gateway and forget it here (works when the gateway is gone)."""
    from x1p1.converter.pairing import unpair as run_unpair

    try:
        _, sentence = run_unpair(_state_dir(state_dir))
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
    resumes once `x1p1 pair` saves a new pairing. `x1p1 status` shows where it is.

    \b
    Exit codes:
      0  stopped by SIGTERM or Ctrl-C
      1  error (a clear message on standard error)
      2  bad option or config file
    """
    from x1p1.converter.config import load_run_config
    from x1p1.converter.supervisor import run_converter
    from x1p1.exceptions import ConfigError
    from x1p1.logs import setup_logging

    overrides = {
        "gateway": gateway,
        "ca": ca,
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
        fail(error)
    sys.exit(code)


@main.command()
@_state_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(state_dir: Path | None, as_json: bool) -> None:
    """Show the pairing and what the running converter reports.

    Paired gateway and address, token expiry, connection state, last telegram, counts,
    latency, serial port and Data Request state.

    \b
    Exit codes:
      0  the converter runs and is connected
      3  it is not running, not paired or not connected, or every telegram is dropped
         as invalid (dropping-invalid)
    """
    from x1p1.converter.state import render_status, status_report

    report = status_report(_state_dir(state_dir))
    click.echo(json.dumps(report, indent=2) if as_json else render_status(report))
    ok = report.get("running") and report.get("connection") == "connected"
    sys.exit(0 if ok else 3)


# --- the embedded gateway: gateway serve|ca, meter …, operator … --------------------------


_gateway_dir_option = _dir_option(
    "The embedded gateway's state directory [default: "
    "$XDG_STATE_HOME/x1p1/gateway or ~/.local/state/x1p1/gateway]."
)


def _gateway_dir(state_dir: Path | None) -> Path:
    from x1p1.gateway.app import default_state_dir as gateway_default

    return state_dir if state_dir is not None else gateway_default()


@main.group()
def gateway() -> None:
    """The embedded DSMR6 gateway: simulated meters behind a real X1 API."""


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
    from x1p1.gateway.pki import root_ca_pem

    try:
        click.echo(root_ca_pem(_gateway_dir(state_dir)).decode("ascii"), nl=False)
    except X1P1Error as error:
        fail(error)


def _control(state_dir: Path | None) -> Any:
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
        raise  # fail() exits; this keeps type checkers sure


def _print_request(request: dict[str, Any]) -> None:
    kind = request.get("kind", "token")
    if kind != "token":  # a portal login or admin-access request (X1 §5.1.3, §9.2.2)
        what = "portal login" if kind == "login" else "portal admin access"
        click.echo(
            f"{request['request_id']}  {request['status']:<8} {what:<30} "
            f"{request['name']!r} code {request['code']} ({request['expires_in']} s left)"
            f"\n    User-Agent: {request['user_agent']}"
        )
        return
    profiles = ",".join(request["profiles"])
    click.echo(
        f"{request['request_id']}  {request['status']:<8} {profiles:<30} "
        f"{request['name']!r} (uuid {request['uuid']}, {request['expires_in']} s left)"
    )


@main.group()
def meter() -> None:
    """The meter's display and buttons of a running embedded gateway (X1 §5.1.5)."""


@meter.command("list")
@_gateway_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def meter_list(state_dir: Path | None, as_json: bool) -> None:
    """Show what waits on the meter's display, oldest first: token requests, portal
    logins (with the browser's User-Agent) and portal admin-access requests."""
    requests = _ask(state_dir, lambda control: control.requests())
    if as_json:
        click.echo(json.dumps(requests, indent=2))
    elif not requests:
        click.echo("No token requests are pending.")
    for request in [] if as_json else requests:
        _print_request(request)


@meter.command("approve")
@click.argument("request_id", metavar="[ID]", required=False)
@click.option("--profiles", metavar="P,…", help="Grant these profiles instead of those asked.")
@_gateway_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def meter_approve(
    request_id: str | None, profiles: str | None, state_dir: Path | None, as_json: bool
) -> None:
    """Approve a token request, portal login or admin access: ID, or the oldest pending
    one, whatever it is (the meter's button)."""
    granted = [p.strip() for p in profiles.split(",")] if profiles is not None else None
    result = _ask(state_dir, lambda control: control.approve(request_id, granted))
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    if "token" not in result:  # a portal login or admin access, approved on the meter
        what = "login" if result.get("kind") == "login" else "admin access (60 minutes)"
        click.echo(
            f"Approved the portal {what} of {result['request']['name']!r} "
            f"(code {result['request']['code']})."
        )
        return
    token = result["token"]
    click.echo(
        f"Approved {result['request']['name']!r}: token {token['token_id']} with "
        f"{', '.join(token['profiles'])}, valid until {token['expires_at']}."
    )


@meter.command("deny")
@click.argument("request_id", metavar="[ID]", required=False)
@_gateway_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def meter_deny(request_id: str | None, state_dir: Path | None, as_json: bool) -> None:
    """Deny a token request, portal login or admin access: ID, or the oldest pending one
    (the meter's button)."""
    result = _ask(state_dir, lambda control: control.deny(request_id))
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(f"Denied {result['request']['name']!r}.")


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


@main.group()
def operator() -> None:
    """The grid operator's remote functions on a running embedded gateway (X1 §12.3)."""


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


@main.command()
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
    Exit codes: 0 every telegram at the P1 end valid, 1 otherwise or on an error.
    """
    import asyncio

    try:
        from x1p1.demo import run_demo
    except ImportError as exc:
        fail(f"the demo needs the gateway extra: pip install 'x1p1[gateway]' ({exc})")
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
