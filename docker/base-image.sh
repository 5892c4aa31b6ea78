#!/bin/sh
# Make the base image (default debian:bookworm-slim) available to `docker build`:
#   1. already present: nothing to do;
#   2. else pulled, when a registry answers;
#   3. else made here: debootstrap --variant=minbase from the Debian mirror apt uses on this
#      machine, slimmed like the official -slim image (no docs, man pages or translations;
#      apt lists and caches empty), and imported with `docker import`.
# Needs root (debootstrap) only in case 3. Usage: docker/base-image.sh [IMAGE]
set -eu
IMAGE=${1:-${BASE_IMAGE:-debian:bookworm-slim}}
SUITE=bookworm

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "base image $IMAGE: present"
    exit 0
fi
if timeout 60 docker pull "$IMAGE" >/dev/null 2>&1; then
    echo "base image $IMAGE: pulled"
    exit 0
fi
case "$IMAGE" in
    debian:bookworm-slim) ;;
    *) echo "cannot pull $IMAGE and only debian:bookworm-slim can be made locally" >&2; exit 1 ;;
esac
command -v debootstrap >/dev/null || { echo "debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }

# The first Debian (not security) mirror of apt's sources, deb822 or one-line format.
mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
    | awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i} /^deb / {for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) {print $i; break}}' \
    | grep -v -- '-security' | head -n 1)
mirror=${mirror:-http://deb.debian.org/debian}
security=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
    | awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i} /^deb / {for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) {print $i; break}}' \
    | grep -- '-security' | head -n 1)
security=${security:-http://deb.debian.org/debian-security}

root=$(mktemp -d /tmp/semantest-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "base image $IMAGE: not present and not pullable; debootstrap $SUITE from $mirror"
debootstrap --variant=minbase "$SUITE" "$root" "$mirror" >"$root.log" 2>&1 \
    || { tail -n 20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"

# What the official -slim image leaves out, also for packages installed later.
mkdir -p "$root/etc/dpkg/dpkg.cfg.d" "$root/etc/apt/apt.conf.d"
cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
CFG
cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
echo 'APT::Install-Recommends "false";' >"$root/etc/apt/apt.conf.d/docker-no-recommends"
rm -f "$root/etc/apt/sources.list"
cat >"$root/etc/apt/sources.list.d/debian.sources" <<SRC
Types: deb
URIs: $mirror
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
find "$root/usr/share/doc" -mindepth 2 ! -name copyright -delete 2>/dev/null || true
rm -rf "$root/usr/share/man/"* "$root/usr/share/info/"* "$root/usr/share/locale/"* \
    "$root/var/cache/apt/"*.bin "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"* \
    "$root/var/log/"*.log "$root/var/log/apt/"* "$root/tmp/"*
tar -C "$root" -c . | docker import \
    --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - "$IMAGE" >/dev/null
echo "base image $IMAGE: made from $mirror ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}'))"
