#!/bin/bash
# Every task released exactly once under load: 500 fork+exec (busybox sh runs /bin/true by its path, a real
# exec each time) under `run -P --workers 2`, with the records archived so that the test can count them.
. /scenarios/lib.sh

say guarded 100 tsem-stream run -P -w load --workers 2 --summary json --archive $OUT/load.archive \
  -- /bin/sh -c 'for i in $(seq 500); do /bin/true; done; echo load-done >&2' >$OUT/summary.json 2>$OUT/load.err
result run_rc $?
section stderr $OUT/load.err
result invalid_releases "$(invalid_releases)"
dmesg >$OUT/dmesg.txt
