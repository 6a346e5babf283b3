#!/usr/bin/env bash
# `make base-image`: build, from Debian's packages alone, a stand-in for python:3.11-slim (the
# base of the bento's Dockerfile) and tag it with that name in the local image store, so that the
# standard Dockerfile builds unchanged on a machine that reaches a Debian mirror and the Python
# package index but no container registry (offline sites, proxies, our CI machines).
# Debian 12's Python 3.11, pip and venv; `python` and `pip` on PATH as in the official image.
set -euo pipefail
engine=$(command -v podman || command -v docker || true)
[ -n "$engine" ] || { echo "base-image: needs podman or docker (apt-get install podman)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "base-image: needs debootstrap (apt-get install debootstrap)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "base-image: debootstrap needs root" >&2; exit 1; }
name=${BASE_IMAGE:-docker.io/library/python:3.11-slim}
root=$(mktemp -d /tmp/cnn-zoo-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3.11,python3.11-venv,python3-pip,ca-certificates \
  bookworm "$root" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >/dev/null
ln -sf /usr/bin/python3.11 "$root/usr/local/bin/python"
ln -sf /usr/bin/python3.11 "$root/usr/local/bin/python3"
ln -sf /usr/bin/pip3 "$root/usr/local/bin/pip"
rm -f "$root"/usr/lib/python3.11/EXTERNALLY-MANAGED  # as in the official image: pip installs
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | "$engine" import \
  --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' - "$name" >/dev/null
echo "$name (built from Debian bookworm packages)"
