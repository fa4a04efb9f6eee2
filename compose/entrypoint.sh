#!/bin/sh
# sf-entrypoint -- names a container's service instance, then becomes the
# service (exec: the service is PID 1 and gets SIGTERM).
#
# ingestion and storage are named <service>-<slot>: the first slot of
# /var/lib/sensorflow/slots (a volume their containers share) that no
# running container of the service holds, by flock on the slot's file, held
# on descriptor 9 for the life of the service. A container restarted, or
# recreated (compose up after a change of image or settings gives a new
# container id), takes the slot its predecessor left, so a storage resumes
# its MQTT session and an ingestion finds its spool folder. Named after the
# container id instead, a recreated storage would leave its old session in
# mosquitto's shared subscription, which goes on handing a share of the
# messages to an absent member (README: Compose). Without a writable slots
# folder the name is <service>-<container id> (it survives a restart, not a
# recreation), said on stderr. An explicit INGESTION_INSTANCE_ID or
# STORAGE_CLIENT_ID wins.
#
# sensor-sim: a SIM_ACCEPTED_LOG ending in / is a folder shared by the
# replicas, and each writes its own <hostname>.csv in it. ingestion: sensor
# API keys are on when docker-compose.yml mounted a file at
# /etc/sensorflow/api-keys (the default mount is /dev/null: off).
set -eu
host=$(cat /etc/hostname)

# Sets name to $1-<first free slot>, or $1-<container id>.
claim_slot() {
  slots=/var/lib/sensorflow/slots n=1 name=$1-$host
  while [ -w "$slots" ] && [ "$n" -le 64 ]; do
    # command: a slot file we may not open skips the slot, not the start;
    # the braces keep 2>/dev/null from staying on the service's stderr.
    if { command exec 9>"$slots/$1-$n.lock"; } 2>/dev/null; then
      if flock -n 9; then name=$1-$n; return 0; fi
      exec 9>&-
    fi
    n=$((n + 1))
  done
  echo "sf-entrypoint: no free slot in $slots (needs a volume writable by uid $(id -u)," \
       "at most 64 of a service): named $name, which a recreated container will not reuse" >&2
}

case "${1:-}" in
  ingestion)
    if [ -z "${INGESTION_INSTANCE_ID:-}" ]; then
      claim_slot ingestion
      export INGESTION_INSTANCE_ID="$name"
    fi
    if [ -z "${INGESTION_API_KEYS_FILE:-}" ] && [ -f /etc/sensorflow/api-keys ]; then
      export INGESTION_API_KEYS_FILE=/etc/sensorflow/api-keys
    fi ;;
  storage)
    if [ -z "${STORAGE_CLIENT_ID:-}" ]; then
      claim_slot storage
      export STORAGE_CLIENT_ID="$name"
    fi ;;
  sensor-sim)
    case "${SIM_ACCEPTED_LOG:-}" in
      */) export SIM_ACCEPTED_LOG="$SIM_ACCEPTED_LOG$host.csv" ;;
    esac ;;
esac
exec "$@"
