#!/usr/bin/env bash
# Set everything up and run every test: ruff (lint and format), mypy --strict on x1p1/,
# then pytest.
# Installs the Debian packages the tests use when run as root (chromium and NSS's
# certutil for the portal's browser tests, iproute2 for mDNS across network namespaces,
# systemd for systemd-analyze); without root those tests skip and say why.
# Extra arguments go to pytest, e.g. scripts/test.sh -k monitor
set -euo pipefail
X1P1_EXTRAS=test
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

need=()
command -v chromium >/dev/null || need+=(chromium)
command -v certutil >/dev/null || need+=(libnss3-tools)  # the portal's tests trust the CA
command -v ip >/dev/null || need+=(iproute2)
command -v systemd-analyze >/dev/null || need+=(systemd)
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "Installing Debian packages: ${need[*]} …" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

echo "== ruff" >&2
.venv/bin/ruff check x1p1 tests bench
.venv/bin/ruff format --check x1p1 tests bench
echo "== mypy --strict x1p1" >&2
.venv/bin/mypy --strict x1p1
echo "== pytest" >&2
# Two workers (pytest-xdist): most tests wait on sockets, timers and subprocesses, so two
# halve the wall time on a two-core machine. X1P1_TEST_WORKERS=0 runs them in one process.
.venv/bin/pytest -q -n "${X1P1_TEST_WORKERS:-2}" "$@"
