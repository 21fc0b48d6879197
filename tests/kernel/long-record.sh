#!/bin/bash
# Records over 4 KiB through the real export file. A file whose path is long (but under PATH_MAX, 4096) is
# reached through nested directories with relative `cd`s and opened by a relative name; the kernel's
# file_open record carries the absolute path plus about 700 bytes of task ids, COE and digest. Two trees on
# the ext4 disk (real digests), made here outside the namespace:
#   near: a 3.1 KiB path, a record just under 4 KiB (the control): opened once under `run -P -t`;
#   long: a 3.7 KiB path, a record over 4 KiB: opened twice in one session. v4's export file loses the
#   first such record (the task sleeps until it is killed, here with SIGKILL after 3 s); the file's buffer
#   has then grown, and the second open's record comes through.
# The reference TMA (mini-tma) runs the same long workload, for comparison, when the initramfs has it.
. /scenarios/lib.sh

component=$(printf 'd%.0s' $(seq 100))
# tree NAME DEPTH: /root/NAME/ with DEPTH nested directories, a file at the bottom.
tree() {
  (cd /root && mkdir $1 && cd $1 && for i in $(seq $2); do mkdir $component && cd $component; done &&
    echo "a file deep down" >file.txt && result $1_path "$(pwd)/file.txt")
}
tree near 31
tree long 37
# down NAME DEPTH: shell code that goes down the tree with relative cds.
down() {
  echo "cd /root/$1; for i in \$(seq $2); do cd $component; done"
}
# The long workload: the first open in the background, killed after 3 s if it hangs; then the second.
long_workload="$(down long 37); /bin/cat file.txt & p=\$!; sleep 3; kill -KILL \$p 2>/dev/null; wait \$p;
  echo first_open_rc=\$?; /bin/cat file.txt; echo second_open_rc=\$?"

say guarded 20 tsem-stream run -P -w near -o $OUT/near.trajectory -t --archive $OUT/near.archive \
  -- /bin/sh -c "$(down near 31); /bin/cat file.txt"
result near_rc $?
say guarded 30 tsem-stream run -P -w long -o $OUT/long.trajectory -t --archive $OUT/long.archive \
  --summary json -- /bin/sh -c "exec >$OUT/long.workload 2>&1; $long_workload" \
  >$OUT/long.summary.json 2>$OUT/long.stderr
result long_rc $?
if [ -x /usr/local/bin/mini-tma ]; then
  say guarded 30 mini-tma /bin/sh -c "exec >$OUT/reference.workload 2>&1; $long_workload" \
    >$OUT/reference.log 2>&1
  result reference_rc $?
fi
result invalid_releases "$(invalid_releases)"
