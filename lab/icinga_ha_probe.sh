#!/bin/sh
# lab/icinga_ha_probe.sh check STATE_FILE RECORD NAME
# lab/icinga_ha_probe.sh event RECORD NAME STATE STATE_TYPE ATTEMPT
#
# A stand-in check and event command for the distributed lab Icinga (lab/icinga_ha.py) where there is
# no cluster to check. Both say which Icinga endpoint ran them ($KOLABMON_ICINGA_ENDPOINT, set by
# lab/icinga_ha.py on each daemon it starts) and append one line to RECORD:
#   EPOCH check|event ENDPOINT NAME [STATE STATE_TYPE ATTEMPT]
# The check exits with the number in STATE_FILE (0 when it is missing), so a test turns a service
# CRITICAL by writing 2 there.
set -u
endpoint=${KOLABMON_ICINGA_ENDPOINT:-unknown}
now=$(date +%s.%N)
case ${1:-} in
  check)
    [ $# -eq 4 ] || { echo "UNKNOWN - usage: $0 check STATE_FILE RECORD NAME"; exit 3; }
    state=0
    [ -r "$2" ] && read -r state < "$2"
    echo "$now check $endpoint $4" >> "$3"
    echo "$4 checked on $endpoint, state $state"
    exit "$state" ;;
  event)
    [ $# -eq 6 ] || { echo "usage: $0 event RECORD NAME STATE STATE_TYPE ATTEMPT" >&2; exit 3; }
    echo "$now event $endpoint $3 $4 $5 $6" >> "$2" ;;
  *)
    echo "UNKNOWN - usage: $0 check|event ..."
    exit 3 ;;
esac
