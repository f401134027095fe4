# Sourced by scripts/demo.sh and scripts/test.sh: create or reuse the virtual environment
# in .venv and install x1p1 with the extras named in $X1P1_EXTRAS. Reinstalls only when
# pyproject.toml changed. Needs nothing but Python >= 3.11 with venv.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "x1p1 needs Python 3.11 or newer as '$PYTHON' (set PYTHON=… to choose another)." >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    if ! "$PYTHON" -m venv .venv; then
        echo "Creating the virtual environment failed: on Debian, apt install python3-venv" >&2
        exit 1
    fi
fi
stamp=".venv/.x1p1-installed-${X1P1_EXTRAS}-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    echo "Installing x1p1[${X1P1_EXTRAS}] into .venv …" >&2
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[${X1P1_EXTRAS}]"
    rm -f .venv/.x1p1-installed-"${X1P1_EXTRAS}"-*
    touch "$stamp"
fi
