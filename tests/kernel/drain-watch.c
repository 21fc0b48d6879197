/* drain-watch: times how long a consumer of an export file takes to drain the queue, the same way for every
 * consumer (tests/real_kernel.rs, drain-rate.sh). It runs CMD as its child and samples the child's CPU time
 * (its process CPU clock, clock_getcpuclockid: all threads, in ns; reading it makes no TSEM event) every
 * 5 ms. On the one-CPU guest a consumer with a backlog runs without pause; once the queue is empty it sleeps in
 * poll. The queue is drained when the child's CPU time has grown by at most SLACK_NS (a few stray records,
 * timers) for QUIET_MS; then the child gets SIGINT, and drain-watch waits for it and writes to RESULT_FILE
 *
 *   spawn_to_end_us=A cpu_us=C status=S
 *
 * end: the first sample at which the CPU time was within SLACK_NS of its value when the child went quiet (A is
 * wall time from the fork, program loading included); C: the child's CPU time at that point; S: its exit status
 * (128+N for a signal). A child that ends by itself is measured the same way.
 * (The kernel of the tests has no per-task I/O accounting, /proc/PID/io, which would count the bytes read.)
 *
 *   usage: drain-watch RESULT_FILE QUIET_MS CMD ARGS...  */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SAMPLE_NS 5000000L
#define SLACK_NS 2000000LL
#define MAX_SAMPLES (1 << 18)

static long long ns_of(clockid_t clock) {
  struct timespec t;
  if (clock_gettime(clock, &t)) return -1;
  return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv) {
  if (argc < 4) { fprintf(stderr, "usage: drain-watch RESULT_FILE QUIET_MS CMD ARGS...\n"); return 2; }
  long long quiet_ns = atoll(argv[2]) * 1000000LL;
  static long long at[MAX_SAMPLES], cpu[MAX_SAMPLES];
  long long t0 = ns_of(CLOCK_MONOTONIC);
  pid_t child = fork();
  if (child == 0) { execvp(argv[3], argv + 3); perror(argv[3]); _exit(127); }
  clockid_t clock;
  if (clock_getcpuclockid(child, &clock)) { perror("clock_getcpuclockid"); kill(child, SIGKILL); return 1; }
  int n = 0, status = 0, signalled = 0;
  long long ref = 0, ref_at = t0, drained = -1;
  struct timespec tick = {0, SAMPLE_NS};
  for (;;) {
    nanosleep(&tick, NULL);
    long long c = ns_of(clock), t = ns_of(CLOCK_MONOTONIC);
    if (c >= 0 && n < MAX_SAMPLES) { at[n] = t; cpu[n] = c; n++; }
    if (c > ref + SLACK_NS) { ref = c; ref_at = t; }
    if (!signalled && c >= 0 && t - ref_at >= quiet_ns) {
      /* Its CPU time when it went quiet: what it spends to shut down is not part of the drain. */
      drained = c;
      kill(child, SIGINT);
      signalled = 1;
    }
    if (waitpid(child, &status, WNOHANG) == child) break;
  }
  long long final = drained >= 0 ? drained : n ? cpu[n - 1] : 0, end = t0, end_cpu = 0;
  for (int i = 0; i < n; i++) {
    if (cpu[i] + SLACK_NS >= final) { end = at[i]; end_cpu = cpu[i]; break; }
  }
  int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  FILE *out = fopen(argv[1], "w");
  if (!out) { perror(argv[1]); return 1; }
  fprintf(out, "spawn_to_end_us=%lld cpu_us=%lld status=%d\n", (end - t0) / 1000, end_cpu / 1000, rc);
  fclose(out);
  if (getenv("DRAIN_WATCH_TRACE")) {
    FILE *tr = fopen(getenv("DRAIN_WATCH_TRACE"), "w");
    for (int i = 0; tr && i < n; i++) fprintf(tr, "%lld %lld\n", (at[i] - t0) / 1000, cpu[i] / 1000);
    if (tr) fclose(tr);
  }
  return 0;
}
