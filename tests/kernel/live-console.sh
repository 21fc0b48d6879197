#!/bin/bash
# The live console in the guest: the workload opens a file, says it is ready (through a FIFO) and waits (it
# blocks opening another FIFO until this script writes to it; FIFO opens raise no TSEM event), while this
# script asks the running tsem-stream through its management socket for the workloads, the state, the
# trajectory and its coefficients, and the model. Then the workload is let go and the final model is kept.
# Every event of the workload before "ready" was synchronous or came before one (its file_fcntl for the
# redirection), so when "ready" arrives, the model holds everything the workload did and stays as it is.
. /scenarios/lib.sh
mkfifo /tmp/go /tmp/ready
socket=/var/lib/tsem-stream/mgmt/live
rm -f $socket

guarded 60 tsem-stream run -P -w live -o $OUT/final.model -- /bin/sh -c \
  '/bin/cat /root/data/a.txt >/dev/null; echo ready >/tmp/ready; read line </tmp/go; echo "workload got: $line"' &
run=$!
# Opened read-write, the FIFOs never block this script, even if the workload is gone.
read -t 30 ready <>/tmp/ready
result workload_ready "$ready"
result socket_seen "$([ -S $socket ] && echo yes || echo no)"

say tsem-stream console >$OUT/workloads.txt 2>&1
result workloads_rc $?
say tsem-stream console -w live -S >$OUT/state.txt 2>&1
result state_rc $?
say tsem-stream console -w live -T >$OUT/trajectory.txt 2>&1
result trajectory_rc $?
say tsem-stream console -w live -T -s >$OUT/coefficients.txt 2>&1
result coefficients_rc $?
say tsem-stream console -w live -M >$OUT/model.txt 2>&1
result model_rc $?
say tsem-stream console -w live -S >$OUT/state-again.txt 2>&1
section workloads $OUT/workloads.txt
section state $OUT/state.txt

echo go 1<>/tmp/go
wait $run
result run_rc $?
result socket_after "$([ -e $socket ] && echo present || echo removed)"
