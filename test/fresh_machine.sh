#!/usr/bin/env bash
# The README's two commands on a truly fresh Debian 12: a minimal system made
# with debootstrap (--variant=minbase) in a temporary directory, this
# repository cloned into its /root (mode 700, as root's home is), then the
# demo and the test command run inside it with chroot.  Reports both
# outcomes; exits 0 only when the demo showed its deliveries and the tests
# ended "N passed, 0 failed".  Not part of test/run.sh: it takes 20 to 30
# minutes.  Run as root on Debian 12.
#
#   bash test/fresh_machine.sh                 a new minbase system
#   bash test/fresh_machine.sh --base DIR      a copy of a minbase system made
#                                              before (debootstrap's output)
#   bash test/fresh_machine.sh --keep          leave the system in place
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

base=
keep=no
while [ $# -gt 0 ]; do
    case "$1" in
        --base) base=$2; shift 2 ;;
        --keep) keep=yes; shift ;;
        *) echo "usage: bash test/fresh_machine.sh [--base DIR] [--keep]" >&2; exit 2 ;;
    esac
done

need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v git >/dev/null || need+=(git)
if [ ${#need[@]} -gt 0 ]; then
    echo "== installing ${need[*]} on this machine"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null ||
        { echo "could not install ${need[*]}"; exit 1; }
fi

top=$(mktemp -d /var/tmp/webhook-fresh.XXXXXX)
fs=$top/root
mounted=()
cleanup() {
    # whatever still runs inside the system, then its mounts
    for p in /proc/[0-9]*; do
        [ "$(readlink "$p/root" 2>/dev/null)" = "$fs" ] && kill -9 "${p#/proc/}" 2>/dev/null
    done
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[$i]}" 2>/dev/null; done
    if [ "$keep" = yes ]; then echo "kept: $fs"; else rm -rf --one-file-system "$top"; fi
}
trap cleanup EXIT

if [ -n "$base" ]; then
    echo "== a copy of the minimal Debian 12 in $base"
    cp -a "$base" "$fs" || exit 1
else
    echo "== a minimal Debian 12 (debootstrap --variant=minbase bookworm) in $fs"
    debootstrap --variant=minbase bookworm "$fs" http://deb.debian.org/debian >"$top/debootstrap.log" 2>&1 ||
        { tail -20 "$top/debootstrap.log"; exit 1; }
fi
# what an installed system of this network has besides: its name server and
# the certificate authorities this host adds to the system's (a network that
# inspects TLS needs them for npm's registry; the ca-certificates package
# that the README's commands install takes them in), the updates and
# security suites; and no service starts inside a chroot
cp /etc/resolv.conf "$fs/etc/resolv.conf"
mkdir -p "$fs/usr/local/share/ca-certificates"
cp /usr/local/share/ca-certificates/*.crt "$fs/usr/local/share/ca-certificates/" 2>/dev/null
cat > "$fs/etc/apt/sources.list" <<'LIST'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
LIST
printf '#!/bin/sh\nexit 101\n' > "$fs/usr/sbin/policy-rc.d"
chmod 755 "$fs/usr/sbin/policy-rc.d"

for m in proc sys dev dev/pts dev/shm; do
    mkdir -p "$fs/$m"
    case "$m" in
        proc) mount -t proc proc "$fs/proc" ;;
        sys) mount -t sysfs sys "$fs/sys" ;;
        dev) mount --bind /dev "$fs/dev" ;;
        dev/pts) mount -t devpts devpts "$fs/dev/pts" ;;
        dev/shm) mount -t tmpfs -o mode=1777 shm "$fs/dev/shm" ;;
    esac || { echo "could not mount $fs/$m"; exit 1; }
    mounted+=("$fs/$m")
done

echo "== this repository cloned into /root/webhook of that system"
chmod 700 "$fs/root"
git clone -q "$repo" "$fs/root/webhook" || exit 1

inside() {
    chroot "$fs" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        bash -c "cd /root/webhook && $1"
}

echo "== 1. the demo: bash scripts/demo.sh (output in $top/demo.log)"
inside 'bash scripts/demo.sh' >"$top/demo.log" 2>&1
demo_status=$?
cp "$top/demo.log" "/var/tmp/webhook-fresh-demo.log"
delivered=$(grep -cE '^\s+[0-9]+ \| .*\| delivered ' "$top/demo.log")
echo "exit status $demo_status, $delivered rows 'delivered' in webhook.deliveries"

echo "== 2. the tests: bash test/run.sh (output in $top/tests.log)"
inside 'bash test/run.sh' >"$top/tests.log" 2>&1
tests_status=$?
cp "$top/tests.log" "/var/tmp/webhook-fresh-tests.log"
grep -E '^\s*not ok|FAILED|failed \(' "$top/tests.log" | head -20
last=$(tail -n 1 "$top/tests.log")
echo "exit status $tests_status, last line: $last"

echo "== outcome (logs kept in /var/tmp/webhook-fresh-demo.log and /var/tmp/webhook-fresh-tests.log)"
ok=yes
if [ "$demo_status" -eq 0 ] && [ "$delivered" -gt 0 ]; then
    echo "demo:  shows $delivered deliveries"
else
    echo "demo:  FAILED (exit $demo_status)"; ok=no
fi
if [ "$tests_status" -eq 0 ] && [[ "$last" =~ ^[0-9]+\ passed,\ 0\ failed$ ]]; then
    echo "tests: $last"
else
    echo "tests: FAILED ($last)"; ok=no
fi
[ "$ok" = yes ]
