#!/usr/bin/env bash
# Build the base image the Dockerfiles take as BASE_IMAGE where no image registry can be reached: Debian
# bookworm's own packages (python3 3.11, venv, CA certificates) laid down by mmdebstrap, with a virtual
# environment first on PATH so that `pip install` and `python` behave as in the official python:3.11-slim.
#   Usage: deploy/images/debian-base/build.sh ENGINE TAG      (ENGINE: podman or docker)
set -euo pipefail
engine=${1:?usage: build.sh ENGINE TAG}
tag=${2:?usage: build.sh ENGINE TAG}
here=$(cd "$(dirname "$0")" && pwd)
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "[debian-base] mmdebstrap $suite (minbase + python3, python3-venv, ca-certificates)"
mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
  --aptopt='Acquire::Retries "3"' \
  "$suite" "$work/rootfs.tar" \
  "deb $mirror $suite main" "deb $mirror $suite-updates main" "deb $security $suite-security main"
"$engine" import "$work/rootfs.tar" "$tag-rootfs" >/dev/null
# As scripts/build-images does: podman's build sees the host's CA bundle, so pip trusts what the host trusts
# (a TLS-inspecting proxy included).
build_args=()
if [ "$engine" = podman ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  build_args+=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
fi
"$engine" build --quiet "${build_args[@]}" --build-arg ROOTFS="$tag-rootfs" -t "$tag" -f "$here/Dockerfile" "$here" >/dev/null
"$engine" rmi "$tag-rootfs" >/dev/null
echo "[debian-base] $tag"
