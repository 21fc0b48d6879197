# Helpers for the scenario scripts (sourced, not run; /scenarios/lib.sh in the guest).
# The test (tests/real_kernel.rs) reads "RESULT key=value" lines from the console and the files a scenario
# leaves in /tmp/out (written to the raw disk /dev/vdb by /init after the scenario).

OUT=/tmp/out
TSEM=/sys/kernel/security/tsem

# result KEY VALUE: one machine-checkable line for the test.
result() { echo "RESULT $1=$2"; }

# now_us: wall-clock microseconds (busybox date has no %N; bash has EPOCHREALTIME).
now_us() { local t=${EPOCHREALTIME/./}; echo "$t"; }

# section NAME FILE: FILE on the console between clear markers, for the transcript.
section() {
  echo "--- BEGIN $1"
  cat "$2"
  echo "--- END $1"
}

# invalid_releases: how many "Invalid process release request" the kernel logged so far.
invalid_releases() { dmesg | grep -c 'Invalid process release request' || true; }

# say CMD...: shows the command on the console (transcript), then runs it; its status is returned. The line goes
# to the console even when the caller redirects the command's output (fd 9 is the scenario's standard output;
# the command does not inherit it).
exec 9>&1
say() {
  echo "# $*" >&9
  "$@" 9>&-
}

# guarded SECS CMD...: runs CMD, killed after SECS seconds (a task waiting for a verdict nobody writes would
# otherwise hang the guest until the test's QEMU timeout); on a timeout prints a clear line and the kernel log's
# tail. Returns CMD's status (137 after the kill). CMD is a child of this shell, exactly as if run directly
# (a wrapper such as timeout(1) would be its parent and change its TASK_ID, see internal-launch.c), and keeps
# this shell's standard input. (`wait -n -p` needs bash 5.1; the guest's bash is the host's.)
guarded() {
  local secs=$1
  shift
  sleep "$secs" &
  local dog=$!
  "$@" <&0 &
  local pid=$! first rc
  wait -n -p first "$pid" "$dog"
  rc=$?
  if [ "$first" = "$dog" ]; then
    echo "TIMEOUT after ${secs}s: $*"
    kill -KILL "$pid"
    wait "$pid"
    rc=$?
    dmesg | tail -5
  else
    kill "$dog"
    wait "$dog" 2>/dev/null
  fi
  return $rc
}
