#!/bin/bash
# The whole host's events (a kernel booted with tsem_mode=root_export_only) through `external_tma/0`: the
# consumer starts first, a busy workload runs (fork+exec, files on ext4, sockets), SIGINT ends the consumer
# cleanly, and its archive is checked and replayed.
. /scenarios/lib.sh

tsem-stream run --tsem-root $TSEM --namespace 0 --profile kernel --archive $OUT/host.archive \
  --summary json >$OUT/host.summary.json 2>$OUT/host.err &
consumer=$!
result started_at_us "$(now_us)"

t0=$(now_us)
for i in $(seq 300); do /bin/true; done
mkdir -p /root/work
for i in $(seq 100); do echo "line $i" >/root/work/f$i; /bin/cat /root/work/f$i >/dev/null; rm /root/work/f$i; done
for i in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/9) 2>/dev/null; done
t1=$(now_us)
result workload_us $((t1 - t0))
# Whatever the workload produced is queued by now; give the consumer a moment to drain it.
sleep 2
kill -INT $consumer
wait $consumer
result consumer_rc $?
section consumer-stderr $OUT/host.err

tsem-stream archive verify $OUT/host.archive >$OUT/verify.txt 2>&1
result verify_rc $?
tsem-stream replay --profile kernel --summary json $OUT/host.archive >$OUT/replay.summary.json 2>$OUT/replay.err
result replay_rc $?
tsem-stream archive cat $OUT/host.archive >$OUT/host.records
tsem-stream coefficients --profile kernel --on-error skip $OUT/host.records >$OUT/host.coefficients 2>$OUT/coefficients.err
result coefficients_rc $?
