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
# A storage slot whose container is gone for good (`--scale storage=N`
# down) leaves its session in the shared subscription, collecting a share
# of the messages for nobody. So each storage holding a slot checks the
# others every SF_SLOT_RETIRE_S seconds (60; 0: never), and one that no
# container held at two checks in a row it retires: holding the slot's lock,
# it runs `storage --retire <id>`, which stores what that session holds and
# ends it, and marks the slot <id>.retired until a container claims it. A
# container that only restarts or is recreated takes its slot back before
# that (one stopped for longer is retired too, and starts a new session when
# it comes back); a retire that fails (broker or database away) is tried
# again at the next check. Retiring is never unsafe: whatever the session
# held is stored.
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
      if flock -n 9; then
        name=$1-$n
        rm -f "$slots/$name.retired"
        return 0
      fi
      exec 9>&-
    fi
    n=$((n + 1))
  done
  echo "sf-entrypoint: no free slot in $slots (needs a volume writable by uid $(id -u)," \
       "at most 64 of a service): named $name, which a recreated container will not reuse" >&2
}

# Retires the storage slots of containers gone for good (above); runs in
# the background beside storage, as long as the container does.
retire_gone() {
  own=$1 slots=/var/lib/sensorflow/slots every=${SF_SLOT_RETIRE_S:-60} free_before=" "
  case "$every" in ''|*[!0-9]*) echo "sf-entrypoint: SF_SLOT_RETIRE_S=$every is not a" \
                                      "number of seconds: slots are not retired" >&2; return ;; esac
  [ "$every" -gt 0 ] || return 0
  while sleep "$every"; do
    free_now=" "
    for f in "$slots"/storage-*.lock; do
      id=${f##*/}
      id=${id%.lock}
      [ -f "$f" ] && [ "$id" != "$own" ] && [ ! -e "$slots/$id.retired" ] || continue
      # The subshell holds the slot's lock while it looks and retires, so a
      # container starting meanwhile takes another slot; it closes our own
      # lock (9), so that storage --retire does not hold our slot. Exit 10:
      # the slot is free and not retired (yet).
      ( exec 9>&- 8>"$f"
        flock -n 8 || exit 0
        case "$free_before" in *" $id "*) ;; *) exit 10 ;; esac
        echo "sf-entrypoint: no container has held $id for $every s and more:" \
             "retiring its session (storage --retire $id)" >&2
        if timeout 600 storage --retire "$id"; then : >"$slots/$id.retired"; exit 0; fi
        exit 10 ) && continue
      [ $? -eq 10 ] && free_now="$free_now$id "
    done
    free_before=$free_now
  done
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
      # The service itself (not `storage --retire ...` in `compose run`).
      case "$name:$#" in storage-[0-9]*:1) retire_gone "$name" & ;; esac
    fi ;;
  sensor-sim)
    case "${SIM_ACCEPTED_LOG:-}" in
      */) export SIM_ACCEPTED_LOG="$SIM_ACCEPTED_LOG$host.csv" ;;
    esac ;;
esac
exec "$@"
