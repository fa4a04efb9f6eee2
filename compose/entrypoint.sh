#!/bin/sh
# sf-entrypoint -- names a container's service instance after the container,
# then becomes the service (exec: the service is PID 1 and gets SIGTERM).
#
# Docker sets the hostname to the container's short id, which survives a
# restart of the same container: a restarted ingestion finds its spool
# folder, a restarted storage resumes its MQTT session. An explicit
# INGESTION_INSTANCE_ID or STORAGE_CLIENT_ID wins. sensor-sim: a
# SIM_ACCEPTED_LOG ending in / is a folder shared by the replicas, and each
# writes its own <hostname>.csv in it. ingestion: sensor API keys are on when
# docker-compose.yml mounted a file at /etc/sensorflow/api-keys (the
# default mount is /dev/null: off).
set -eu
host=$(cat /etc/hostname)
case "${1:-}" in
  ingestion)
    export INGESTION_INSTANCE_ID="${INGESTION_INSTANCE_ID:-ingestion-$host}"
    if [ -z "${INGESTION_API_KEYS_FILE:-}" ] && [ -f /etc/sensorflow/api-keys ]; then
      export INGESTION_API_KEYS_FILE=/etc/sensorflow/api-keys
    fi ;;
  storage)   export STORAGE_CLIENT_ID="${STORAGE_CLIENT_ID:-storage-$host}" ;;
  sensor-sim)
    case "${SIM_ACCEPTED_LOG:-}" in
      */) export SIM_ACCEPTED_LOG="$SIM_ACCEPTED_LOG$host.csv" ;;
    esac ;;
esac
exec "$@"
