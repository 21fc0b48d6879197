#!/bin/bash
# Drain rates of the whole host's export (tsem_mode=root_export_only): the kernel keeps the records nobody reads,
# so a busy workload run with no consumer leaves a backlog, and each consumer in turn is timed draining one:
# the C baseline (export-reader), `tsem-stream run --namespace 0` without and with --archive. drain-watch times
# them all the same way and stops each with SIGINT once drained. Rounds alternate the order. First, the
# workload's own export rate with a consumer (tsem-stream with archive) keeping up; last, export-reader takes
# what is left, so that every consumer's share of the numbering is bounded by its neighbours'; $OUT/order lists
# the consumers in turn (NAME-ROUND, then last). /root/rounds holds the number of rounds (default 3).
. /scenarios/lib.sh
rounds=$(cat /root/rounds 2>/dev/null || echo 3)
mkdir -p /root/work
# A busy host: fork+exec, files on ext4 (created, read, removed; and opened by the shell itself, which makes
# events faster than forks do), TCP connects (refused: nothing listens).
echo data >/root/work/data
busy() {
  for i in $(seq 100); do /bin/true; done
  for i in $(seq 50); do echo "line $i" >/root/work/f$i; /bin/cat /root/work/f$i >/dev/null; rm /root/work/f$i; done
  for i in $(seq 1500); do : </root/work/data; done
  for i in $(seq 300); do : 2>/dev/null 3<>/dev/tcp/127.0.0.1/9; done
}
consume() { # NAME OUTPUT_PREFIX: one consumer, timed by drain-watch
  case $1 in
    c) drain-watch $2.watch 300 export-reader $TSEM/external_tma/0 >$2.out 2>$2.err ;;
    tsem) drain-watch $2.watch 300 tsem-stream run --tsem-root $TSEM --namespace 0 --profile kernel \
            --summary json >$2.out 2>$2.err ;;
    archive) drain-watch $2.watch 300 tsem-stream run --tsem-root $TSEM --namespace 0 --profile kernel \
               --archive $2.archive --summary json >$2.out 2>$2.err ;;
  esac
}

# The export rate with a consumer (tsem-stream, archiving) reading at the same time; the marker files bound the
# workload in the numbering. drain-watch stops the consumer once it has caught up after the workload.
drain-watch $OUT/keepup.watch 300 tsem-stream run --tsem-root $TSEM --namespace 0 --profile kernel \
  --archive $OUT/keepup.archive --summary json >$OUT/keepup.out 2>$OUT/keepup.err &
watcher=$!
: >/root/work/mark-begin
t0=$(now_us); busy; t1=$(now_us)
: >/root/work/mark-end
result keepup_busy_us $((t1 - t0))
wait $watcher
result keepup_rc $?
result watch_keepup "$(cat $OUT/keepup.watch)"

order=(c tsem archive)
for r in $(seq $rounds); do
  for k in 0 1 2; do
    c=${order[$(( (k + r - 1) % 3 ))]}
    t0=$(now_us); busy; t1=$(now_us)
    result busy_us_${c}_$r $((t1 - t0))
    guarded 100 consume $c $OUT/$c-$r
    result rc_${c}_$r $?
    result watch_${c}_$r "$(cat $OUT/$c-$r.watch)"
    echo "$c-$r" >>$OUT/order
    echo "$c round $r: $(cat $OUT/$c-$r.watch) $(grep -o 'records=[0-9]*' $OUT/$c-$r.out)"
  done
done
guarded 30 consume c $OUT/last
result rc_last $?
echo last >>$OUT/order
# Loading tsem-stream (a large program, under TCG) is part of each of its drains: measured alone, for scale.
drain-watch $OUT/loading.watch 300 tsem-stream --version >/dev/null
result watch_loading "$(cat $OUT/loading.watch)"
