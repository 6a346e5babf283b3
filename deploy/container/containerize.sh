#!/usr/bin/env bash
# `make containerize`: the bento's image with whichever engine this machine has:
# `bentoml containerize` with a running Docker engine, else with its Podman (or Buildah) backend,
# which builds the same generated Dockerfile with the bento and its models as the context. Its
# base, python:3.11-slim (the GPU bento's too: JAX's CUDA libraries are wheels), is pulled as
# usual; where no registry can be reached, `make base-image` builds a stand-in first. Prints the
# image's tag.
set -euo pipefail
tag=${1:?usage: containerize.sh BENTO_TAG}
bentoml=${BENTOML:-.venv/bin/bentoml}
bento_dir=$("$bentoml" get "$tag" -o path)
image=$("$bentoml" get "$tag" -o json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["name"] + ":" + d["version"])')
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  "$bentoml" containerize "$tag" -t "$image" >&2
elif command -v podman >/dev/null || command -v buildah >/dev/null; then
  backend=$(command -v podman >/dev/null && echo podman || echo buildah)
  export CONTAINERS_CONF=${CONTAINERS_CONF:-$(cd "$(dirname "$0")" && pwd)/containers.conf}
  # crun fails on setrlimit and cgroups in some sandboxes; runc works in all we have met.
  opts=(--opt network=host --opt "runtime=${CONTAINER_RUNTIME:-runc}")
  # pip inside the build verifies the package index with the host's CA bundle, which also
  # holds a proxy's or a site's own authority where there is one.
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    opts+=(--opt volume=/etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
    opts+=(--opt build-arg=UV_NATIVE_TLS=true)  # uv reads the system's store, not its own
  fi
  base=$(sed -n 's/^FROM \([^ ]*\).*/\1/p' "$bento_dir/env/docker/Dockerfile" | head -1)
  if [ "$backend" = podman ]; then has_base() { podman image exists "$base"; }
  else has_base() { buildah inspect --type image "$base" >/dev/null 2>&1; }; fi
  if ! has_base && ! "$backend" pull -q "$base" >/dev/null 2>&1; then
    echo "containerize: cannot pull the base image $base (no registry reachable?); \`make base-image\` builds a stand-in from Debian packages" >&2
    exit 1
  fi
  "$bentoml" containerize --backend "$backend" "${opts[@]}" "$tag" -t "$image" >&2
else
  echo "containerize: no Docker engine, Podman or Buildah here (apt-get install podman)" >&2
  exit 1
fi
echo "$image"
