#!/bin/bash
# Profile K against the kernel's own TMA, live. The same deterministic workload runs twice:
#  1. in an *internal* namespace, modeled by the kernel itself (ground truth: its trajectory and
#     trajectory_coefficients), launched by internal-launch (in the initramfs when the test found a C
#     compiler; it runs the workload with the capabilities process mode gives it); without it a shell writes
#     `internal` and runs the workload itself;
#  2. under `tsem-stream run -P --profile kernel` (learning), with the records archived.
# The test computes the Profile K coefficients of the kernel's trajectory and compares them, and the learned
# points, with the kernel's.
. /scenarios/lib.sh
# bash and GNU grep are dynamically linked (library opens and mappings); ls is busybox, exec'd by bash.
workload=(/bin/bash /root/workload.sh)

if [ -x /usr/local/bin/internal-launch ]; then
  internal-launch "$OUT" "${workload[@]}"
  result internal_rc $?
  result reader internal-launch
else
  # The snapshots are taken from inside the namespace (the kernel shows the reader's own namespace), by cp,
  # which opens both files itself: every event of the reading is a `cp` event.
  bash -c 'echo internal > '$TSEM'/control || exit 121
           "$@"; rc=$?
           cp '$TSEM'/internal_tma/model0/trajectory '$OUT'/internal-trajectory
           cp '$TSEM'/internal_tma/model0/trajectory_coefficients '$OUT'/internal-coefficients
           cp '$TSEM'/internal_tma/model0/trajectory '$OUT'/internal-trajectory-after
           exit $rc' internal "${workload[@]}"
  result internal_rc $?
  result reader cp
fi
result internal_trajectory_lines "$(wc -l < $OUT/internal-trajectory)"
result internal_coefficient_lines "$(wc -l < $OUT/internal-coefficients)"

guarded 40 tsem-stream run -P -w profile-k --profile kernel -o $OUT/process.model \
  --archive $OUT/process.archive -- "${workload[@]}"
result process_rc $?
result invalid_releases "$(invalid_releases)"
