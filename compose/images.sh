#!/usr/bin/env bash
# images.sh -- make every image the compose file needs exist locally, for a
# Docker engine that cannot pull (no registry):
#   - debian:bookworm-slim, with debootstrap (base-image.sh);
#   - each infrastructure image named in the environment or .env
#     (POSTGRES_IMAGE, MOSQUITTO_IMAGE, HAPROXY_IMAGE) that is neither present
#     nor pullable: a stand-in of the same name from standins/<name>/.
# Our own images are built by compose (`up --build`). Images already present
# are left alone; run it again after `docker rmi` to rebuild.
#
#   compose/images.sh [ENV_FILE]
set -euo pipefail
cd "$(dirname "$0")"

env_file=${1:-../.env}
getvar() { # NAME DEFAULT: environment > env file > default
  local v=${!1:-}
  if [ -z "$v" ] && [ -f "$env_file" ]; then
    v=$(sed -n "s/^$1=//p" "$env_file" | tail -n 1)
  fi
  echo "${v:-$2}"
}

./base-image.sh debian:bookworm-slim

for spec in postgres:POSTGRES_IMAGE:postgres:15-bookworm \
            mosquitto:MOSQUITTO_IMAGE:eclipse-mosquitto:2 \
            haproxy:HAPROXY_IMAGE:haproxy:2.6; do
  dir=${spec%%:*}; rest=${spec#*:}
  var=${rest%%:*}; def=${rest#*:}
  image=$(getvar "$var" "$def")
  if docker image inspect "$image" >/dev/null 2>&1; then
    continue
  fi
  if timeout 60 docker pull -q "$image" >/dev/null 2>&1; then
    echo "images: pulled $image" >&2
    continue
  fi
  echo "images: $image cannot be pulled: building the stand-in standins/$dir" >&2
  docker build -q -t "$image" "standins/$dir" >/dev/null
done
