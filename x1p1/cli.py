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

import sys

import click

from x1p1 import __version__
from x1p1.exceptions import X1P1Error


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="x1p1")
def main() -> None:
    """x1p1: keep P1 dongles working on DSMR6 meters (X1 to P1), with an embedded gateway.

    \b
    Exit codes: 0 success, 1 error, 2 usage error; `x1p1 pair --help` lists its own.
    """


def fail(error: X1P1Error | str, code: int = 1) -> None:
    """Print a clear one-line error on standard error and exit with ``code``."""
    click.echo(f"x1p1: {error}", err=True)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
