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

import json
import sys
from pathlib import Path

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


def fail(error: X1P1Error | str, code: int = 1) -> None:
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
        return
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
        read = sys.stdin.buffer.read1
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
        return
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
        return
    if len(data) > limit:
        fail(f"{file} is larger than 64 MiB: not a billing response", 2)
        return
    try:
        report = verify(data, root)
    except BillingVerificationError as exc:
        fail(f"{file}: {exc}", 2)
        return
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
def serial_udev_rule(port: str) -> None:
    """Print a udev rule that names the USB adapter behind PORT /dev/x1p1-p1.

    PORT is a device (/dev/ttyUSB0), a /dev/serial/by-id link or another symlink. The
    rule matches the adapter's USB vendor, product and serial number, so the name
    follows it to any USB socket. Install it with:

    \b
      x1p1 serial udev-rule PORT | sudo tee /etc/udev/rules.d/99-x1p1.rules
      sudo udevadm control --reload
      sudo udevadm trigger --action=add --subsystem-match=tty
    """
    from x1p1.converter.serial_ports import udev_rule

    try:
        click.echo(udev_rule(port), nl=False)
    except X1P1Error as error:
        fail(error)


if __name__ == "__main__":  # pragma: no cover
    main()
