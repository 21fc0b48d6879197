/* internal-launch: runs a command in a new *internal* TSEM namespace (modeled by the kernel's own TMA) in the
 * same process shape as `tsem-stream run -P` runs it in an external one, so that the kernel's ground-truth
 * model (Profile K) and tsem-stream's can be compared point for point (tests/real_kernel.rs, profile_k).
 *
 *   usage: internal-launch OUTDIR CMD ARGS...
 *
 * 1. Writes "internal" to control: this process moves into a new namespace that the kernel models itself.
 * 2. Forks; the child drops CAP_MAC_ADMIN from its bounding set (as the process-mode child does before it
 *    executes the workload: the capability set is part of every event's COE, so the workload must run with
 *    the same capabilities in both runs) and executes CMD.
 * 3. Waits for CMD, then copies internal_tma/model0/trajectory, trajectory_coefficients, and the trajectory
 *    once more to OUTDIR (internal-trajectory, internal-coefficients, internal-trajectory-after; the kernel
 *    shows the reader's own namespace, so the copies are made from inside it). Its own events (the fork,
 *    the opens of these files) are modeled too and are the last points: the third copy describes the points
 *    the second one has beyond the first.
 *
 * Why a program and not a shell: step 2 needs to drop a capability from the bounding set, which busybox cannot.
 * Exit status: CMD's, or 120 + step for a failure of this program.  */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define TSEM "/sys/kernel/security/tsem/"
#define CAP_MAC_ADMIN_BIT 33

/* Copies the file FROM into OUTDIR/NAME. */
static int copy_out(const char *from, const char *outdir, const char *name) {
  char to[4096];
  static char buf[1 << 16];
  snprintf(to, sizeof to, "%s/%s", outdir, name);
  int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (in < 0 || out < 0) { perror(in < 0 ? from : to); return -1; }
  ssize_t n;
  while ((n = read(in, buf, sizeof buf)) > 0)
    if (write(out, buf, n) != n) { perror(to); return -1; }
  close(in);
  close(out);
  return n < 0 ? -1 : 0;
}

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: internal-launch OUTDIR CMD ARGS...\n"); return 2; }
  int ctl = open(TSEM "control", O_WRONLY);
  if (ctl < 0 || write(ctl, "internal\n", 9) != 9) { perror("internal"); return 121; }
  close(ctl);
  pid_t child = fork();
  if (child < 0) { perror("fork"); return 122; }
  if (child == 0) {
    if (prctl(PR_CAPBSET_DROP, CAP_MAC_ADMIN_BIT, 0, 0, 0)) { perror("drop CAP_MAC_ADMIN"); _exit(126); }
    execvp(argv[2], argv + 2);
    perror(argv[2]);
    _exit(127);
  }
  int status = 0;
  if (waitpid(child, &status, 0) != child) { perror("waitpid"); return 123; }
  if (copy_out(TSEM "internal_tma/model0/trajectory", argv[1], "internal-trajectory")) return 124;
  if (copy_out(TSEM "internal_tma/model0/trajectory_coefficients", argv[1], "internal-coefficients")) return 125;
  if (copy_out(TSEM "internal_tma/model0/trajectory", argv[1], "internal-trajectory-after")) return 124;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
