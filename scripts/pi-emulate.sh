#!/bin/bash
# Install x1p1 as a new user would on 32-bit Raspberry Pi OS, but in a Debian bookworm
# root for armhf (armv7l) or armel (armv6l) run under qemu-user: no compiler, only
# python3-venv, then `pip install` of this repository's HEAD, and the first commands.
# What this proves, and what it does not: docs/pi-emulation.md.
#
#   sudo scripts/pi-emulate.sh armhf|armel [MIRROR]
#
# Needs root, qemu-user-static, binfmt-support and debootstrap (apt install them), and
# reaches only Debian's mirror and PyPI. Downloads about 150 MB and takes 10 to 20 minutes.
# Everything it makes (the root under a mktemp directory, the /proc mount in it, a
# binfmt_misc mount or qemu-arm registration it had to add) goes again when it exits.
set -euo pipefail

arch=${1:-}
mirror=${2:-http://deb.debian.org/debian}
case "$arch" in
    armhf) cpu=cortex-a7; machine=armv7l ;; # the Pi 2's core; Pi 3/4/5 run armhf as ARMv7 too
    armel) cpu=arm1176; machine=armv6l ;; # the Pi 1 and Zero's ARM1176JZF-S
    *) echo "usage: $0 armhf|armel [MIRROR]" >&2; exit 2 ;;
esac
if [ "$(id -u)" != 0 ]; then echo "$0 needs root (debootstrap, chroot, mount)" >&2; exit 2; fi
for tool in debootstrap update-binfmts qemu-arm-static git; do
    if ! command -v "$tool" >/dev/null; then
        echo "$0 needs $tool: apt install qemu-user-static binfmt-support debootstrap git" >&2
        exit 2
    fi
done
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

work=$(mktemp -d /tmp/x1p1-pi-emulate.XXXXXX)
root="$work/root"
mounted_binfmt=no
enabled_qemu=no
cleanup() {
    if mountpoint -q "$root/proc" 2>/dev/null; then umount "$root/proc"; fi
    rm -rf --one-file-system "$work"
    if [ "$enabled_qemu" = yes ]; then update-binfmts --disable qemu-arm || true; fi
    if [ "$mounted_binfmt" = yes ]; then umount /proc/sys/fs/binfmt_misc || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM  # so that the EXIT trap cleans up on Ctrl-C or kill too

if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    mounted_binfmt=yes
fi
if ! grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-arm 2>/dev/null; then
    update-binfmts --enable qemu-arm
    enabled_qemu=yes
fi

step() { echo "== $(date -u +%H:%M:%S) $*" >&2; }

step "debootstrap $arch bookworm, first stage (downloads)"
nice -n 10 debootstrap --arch="$arch" --foreign --variant=minbase --include=python3-venv \
    bookworm "$root" "$mirror" >"$work/debootstrap.log"
step "debootstrap second stage under qemu"
QEMU_CPU=$cpu nice -n 10 chroot "$root" /debootstrap/debootstrap --second-stage \
    >>"$work/debootstrap.log"
mount -t proc proc "$root/proc"
cp /etc/resolv.conf "$root/etc/resolv.conf"

# A TLS-intercepting proxy on the way to PyPI needs its CA inside the root too.
pip_env=(PIP_DISABLE_PIP_VERSION_CHECK=1)
if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
    mkdir -p "$root/etc/ssl/certs"
    cp "$PIP_CERT" "$root/etc/ssl/certs/x1p1-pip-cert.pem"
    pip_env+=(PIP_CERT=/etc/ssl/certs/x1p1-pip-cert.pem)
fi

step "the repository's HEAD into /opt/x1p1, and a P1 capture"
mkdir -p "$root/opt/x1p1"
git -C "$repo" archive HEAD | tar -x -C "$root/opt/x1p1"
(cd "$repo" && python3 -c '
import sys
sys.path[:0] = ["tests"]
from p1_corpus import corpus
c = corpus()
bad = bytearray(c["one-phase"])
bad[bad.index(b"kWh") - 2] ^= 1  # one flipped bit: the CRC must catch it
sys.stdout.buffer.write(c["spec-example"] + c["three-phase"] + bytes(bad))
') >"$root/root/capture.p1"

in_root() {
    env -i PATH=/opt/x1p1/.venv/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        QEMU_CPU="$cpu" "${pip_env[@]}" nice -n 10 chroot "$root" bash -c "cd /root && $1"
}
step "inside: the machine, and no compiler"
in_root 'uname -m; python3 --version; for c in cc gcc clang; do
    if command -v $c; then echo "a compiler is present: $c" >&2; exit 1; fi; done
    echo "no cc, gcc or clang"'
[ "$(in_root 'uname -m')" = "$machine" ]
step "inside: python3 -m venv, then pip install /opt/x1p1 (the lean install), timed"
in_root 'time python3 -m venv /opt/x1p1/.venv
    time pip install --no-cache-dir /opt/x1p1' 2>&1 | tee "$work/pip.log" |
    grep -E '^(real|  Downloading|  Building wheel|Successfully installed)|ERROR' || true
grep -q '^Successfully installed' "$work/pip.log"
step "inside: the first commands"
in_root 'x1p1 --version
    x1p1 monitor - <capture.p1 | grep -E "^(x1p1 monitor|--- telegram)"
    python -c "import zeroconf, websockets, serial; print(\"imports: ok\")"
    python -c "import zeroconf._cache as m; print(\"zeroconf compiled:\", m.__file__.endswith(\".so\"))"
    python -c "import crcmod" 2>/dev/null && echo "crcmod: installed" || echo "crcmod: absent"
    pip list --format=freeze'
step "done; removing $work"
