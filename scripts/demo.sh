#!/usr/bin/env bash
# Set everything up and run the main job on the embedded default: x1p1 demo (the embedded
# gateway, pairing, the converter and a P1 reader on one machine). Ctrl-C stops it.
set -euo pipefail
X1P1_EXTRAS=gateway
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
exec .venv/bin/x1p1 demo "$@"
