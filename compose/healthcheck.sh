#!/bin/bash
# sf-healthcheck SERVICE -- the images' HEALTHCHECK, with nothing but bash
# (no curl in the runtime image).
#   ingestion: GET /healthz on its port answers 200 (the process serves HTTP;
#              /readyz, which HAProxy checks, also needs the broker).
#   storage:   it holds an established TCP connection to the broker and one to
#              the database (it has no HTTP listener yet).
set -u
port_of() { # URL DEFAULT: the URL's explicit port, else DEFAULT
  if [[ $1 =~ ^[a-z]+://([^@/]*@)?(\[[^]]*\]|[^:/?]*):([0-9]+) ]]; then
    echo "${BASH_REMATCH[3]}"
  else
    echo "$2"
  fi
}
established_to() { # PORT: a socket in state ESTABLISHED (01) to that remote port
  local hex
  hex=$(printf '%04X' "$1")
  awk -v p=":$hex" 'FNR > 1 && substr($3, length($3) - 4) == p && $4 == "01" { f = 1 } END { exit !f }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
case "${1:-}" in
  ingestion)
    exec 3<>"/dev/tcp/127.0.0.1/${INGESTION_PORT:-8081}" || exit 1
    printf 'GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
    read -r -t 3 _ code _ <&3 || exit 1
    [ "$code" = 200 ]
    ;;
  storage)
    established_to "$(port_of "${MQTT_URL:-tcp://localhost:1883}" 1883)" || { echo "not connected to the broker"; exit 1; }
    established_to "$(port_of "${DATABASE_URL:-}" 5432)" || { echo "not connected to the database"; exit 1; }
    ;;
  *)
    echo "usage: sf-healthcheck ingestion|storage" >&2
    exit 2
    ;;
esac
