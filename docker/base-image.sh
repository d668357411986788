#!/usr/bin/env bash
# Build a local Debian bookworm base image (python3 + venv, ca-certificates, curl) with no
# container registry: debootstrap a minbase root file system, then `docker import` it.
#
#   docker/base-image.sh            # builds logdist-base:bookworm unless it already exists
#   FORCE=1 docker/base-image.sh    # rebuild even if it exists
#   BASE_TAG=name:tag docker/base-image.sh
#
# Debian packages come from the mirror this machine's apt already uses (read from its sources at
# run time), or debootstrap's own default when apt names none. Needs root (debootstrap, chroot).
set -euo pipefail

TAG="${BASE_TAG:-logdist-base:bookworm}"
SUITE="${SUITE:-bookworm}"
HERE="$(cd "$(dirname "$0")" && pwd)"
WORK="${BUILD_DIR:-$HERE/.build}/base"
PACKAGES="python3,python3-venv,ca-certificates,curl"

say() { printf '==> [base-image] %s\n' "$*"; }

if ! docker info >/dev/null 2>&1; then
    echo "base-image: no Docker engine answers (docker info failed)" >&2
    exit 1
fi
if [[ -z "${FORCE:-}" ]] && docker image inspect "$TAG" >/dev/null 2>&1; then
    say "$TAG already exists ($(docker image inspect -f '{{.Id}}' "$TAG" | cut -c1-19)); skipping (FORCE=1 rebuilds)"
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "base-image: debootstrap needs root" >&2
    exit 1
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    say "installing debootstrap (apt-get update first)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

# The mirror apt already uses for the main suite, if it names one (deb822 or one-line format).
apt_mirror() {
    local f uri=""
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        uri=$(awk '
            /^[[:space:]]*$/ { if (u != "" && s ~ /(^| )'"$SUITE"'( |$)/) { print u; exit } u = ""; s = ""; next }
            /^URIs:/ { u = $2 }
            /^Suites:/ { $1 = ""; s = $0 " " }
            END { if (u != "" && s ~ /(^| )'"$SUITE"'( |$)/) print u }' "$f" | head -n1)
        [[ -n $uri ]] && break
    done
    if [[ -z $uri && -f /etc/apt/sources.list ]]; then
        uri=$(awk '$1 == "deb" && $3 == "'"$SUITE"'" { print $2; exit }' /etc/apt/sources.list)
    fi
    printf '%s' "$uri"
}
MIRROR="${MIRROR:-$(apt_mirror)}"

ROOTFS="$WORK/rootfs"
say "debootstrap $SUITE (minbase + ${PACKAGES//,/ }) into $ROOTFS"
rm -rf "$ROOTFS"
mkdir -p "$WORK"
start=$SECONDS
# debootstrap prints one line per step (I: Retrieving / Validating / Unpacking / Configuring ...).
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS" ${MIRROR:+"$MIRROR"} 2>&1 \
    | while IFS= read -r line; do printf '    %s\n' "$line"; done
[[ -x $ROOTFS/usr/bin/python3 ]] || { echo "base-image: debootstrap produced no python3" >&2; exit 1; }

say "trimming the root file system (apt caches, docs, man pages)"
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* \
    "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* \
    "$ROOTFS"/var/log/*.log "$ROOTFS"/tmp/* || true
# Do not ship this machine's resolver or host name into the image.
: >"$ROOTFS/etc/resolv.conf"
printf 'logdist\n' >"$ROOTFS/etc/hostname"

say "importing as $TAG ($(du -sh "$ROOTFS" | cut -f1) uncompressed)"
tar --numeric-owner -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    --message "logdist base: debootstrap $SUITE minbase + ${PACKAGES//,/ }" \
    - "$TAG" >/dev/null
rm -rf "$ROOTFS"
say "done in $((SECONDS - start)) s: $(docker run --rm "$TAG" python3 --version 2>&1)"
