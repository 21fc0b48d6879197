#!/bin/bash
# Cost: the same 500 fork+exec workload under the reference TMA (mini-tma, C, answers every event `trusted`)
# and under `tsem-stream run -P` (learning), in the same boot, seven times each, alternating (the first round
# also pays for loading each program); wall times in microseconds. Also the workload alone, unmodeled, for
# scale.
. /scenarios/lib.sh
workload=(/bin/sh -c 'for i in $(seq 500); do /bin/true; done')

t0=$(now_us); "${workload[@]}"; t1=$(now_us)
result bare_us $((t1 - t0))
for round in 1 2 3 4 5 6 7; do
  if [ -x /usr/local/bin/mini-tma ]; then
    t0=$(now_us); guarded 100 mini-tma "${workload[@]}" 2>$OUT/mini-tma-$round.err; rc=$?; t1=$(now_us)
    result mini_tma_rc_$round $rc
    result mini_tma_us_$round $((t1 - t0))
    tail -1 $OUT/mini-tma-$round.err
  fi
  t0=$(now_us); guarded 100 tsem-stream run -P -w cost -- "${workload[@]}"; rc=$?; t1=$(now_us)
  result tsem_stream_rc_$round $rc
  result tsem_stream_us_$round $((t1 - t0))
done
result invalid_releases "$(invalid_releases)"
