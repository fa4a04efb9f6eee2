#!/bin/sh
# compose/mosquitto-start.sh -- the broker's command in compose: writes its
# users and ACL from the environment (so no password is in an image or in
# the repository), then runs mosquitto with compose/mosquitto.conf.
#
#   ingestion  MQTT_INGESTION_PASSWORD  writes readings, reads confirmations
#   storage    MQTT_STORAGE_PASSWORD    reads readings, writes confirmations
#   health     random, per start        connects only (the healthcheck)
set -eu
: "${MQTT_INGESTION_PASSWORD:?is not set (set it in .env)}"
: "${MQTT_STORAGE_PASSWORD:?is not set (set it in .env)}"
readings=${MQTT_TOPIC_PREFIX:-sensorflow/v1/readings}
stored=${MQTT_STORED_PREFIX:-sensorflow/v1/stored}
umask 077
dir=/tmp/mosquitto-auth
mkdir -p "$dir"
health=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
printf '%s\n' "$health" >"$dir/health"
printf 'ingestion:%s\nstorage:%s\nhealth:%s\n' \
  "$MQTT_INGESTION_PASSWORD" "$MQTT_STORAGE_PASSWORD" "$health" >"$dir/passwd"
mosquitto_passwd -U "$dir/passwd"
cat >"$dir/acl" <<ACL
user ingestion
topic write $readings/#
topic read $stored/#

user storage
topic read $readings/#
topic write $stored/#
ACL
# mosquitto drops to its own user before it reads these.
if id mosquitto >/dev/null 2>&1; then
  chown -R mosquitto:mosquitto "$dir"
fi
unset MQTT_INGESTION_PASSWORD MQTT_STORAGE_PASSWORD
exec mosquitto -c /mosquitto/config/mosquitto.conf
