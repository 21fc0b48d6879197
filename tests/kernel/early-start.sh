#!/bin/bash
# Whole-host export from early boot with the shipped scripts (boot with tsem_early=1): /init ran
# contrib/initramfs-tools/scripts/init-top/tsem-stream before anything else, which started tsem-stream on
# external_tma/0, archiving and learning a host model in /run/tsem-stream/early. A busy phase runs; the
# shipped init-bottom script stops it (SIGTERM, as before the switch to the real root). Then a second
# instance takes over as tsem-stream-host.service would, with the learned model sealed (-m): new actions
# are host deviations, reported as forensics (the root namespace gets no verdicts); SIGTERM ends it.
. /scenarios/lib.sh
early=/run/tsem-stream/early
pid=$(cat $early/pid)
result early_running "$([ -d /proc/$pid ] && echo yes || echo no)"

# Learned: fork+exec, files, a connect.
for i in $(seq 100); do /bin/true; done
for i in $(seq 20); do echo "line $i" >/root/f$i; /bin/cat /root/f$i >/dev/null; rm /root/f$i; done
(exec 3<>/dev/tcp/127.0.0.1/9) 2>/dev/null
/scripts/init-bottom/tsem-stream
result early_stopped "$([ -f $early/pid ] && echo no || echo yes)"
cp -a $early $OUT/early

# The service's instance, with the sealed host model; new behaviour: programs, files and ports not seen yet.
tsem-stream run --tsem-root $TSEM --namespace 0 --profile kernel --archive $OUT/service.archive \
  -m $early/host.model --summary json >$OUT/service.summary.json 2>$OUT/service.err &
service=$!
for i in $(seq 20); do /bin/true; done
mkdir -p /root/new && echo new >/root/new/file && /bin/ls /root/new >/dev/null && /bin/sha256sum /root/new/file >/dev/null
(exec 3<>/dev/tcp/127.0.0.1/7) 2>/dev/null
/bin/uname -a >/dev/null
sleep 2
kill -TERM $service
wait $service
result service_rc $?
section service-stderr $OUT/service.err
