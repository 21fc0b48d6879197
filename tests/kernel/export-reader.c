/* export-reader: the minimal C consumer of a TSEM export file, the baseline for tsem-stream's drain rate
 * (tests/real_kernel.rs, `the_host_backlog_drains_...`). Like ../shared/tsem-kernel/mini-tma.c's monitor, but it
 * only reads and counts, as fast as it can: one read() per record at offset 0 and lseek(0) after it (the kernel's
 * seq_file protocol: a read at offset 0 dequeues one record), poll() when the queue is empty (ENODATA). It
 * checks `event.number` for gaps, ends on SIGINT or SIGTERM and prints on standard output
 *
 *   export-reader: records=N bytes=B first=F last=L gaps=G lost=M empty=E
 *
 * (first/last: the first and last `event.number` read; gaps: breaks in the numbering; lost: numbers skipped;
 * empty: reads that found the queue empty).
 *
 *   usage: export-reader [FILE]   (default /sys/kernel/security/tsem/external_tma/0)  */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

/* The value of "number": "N" in a record, 0 when absent. */
static unsigned long long number_of(const char *rec, size_t len) {
  static const char key[] = "\"number\": \"";
  const char *p = memmem(rec, len, key, sizeof key - 1);
  if (!p) return 0;
  return strtoull(p + sizeof key - 1, NULL, 10);
}

int main(int argc, char **argv) {
  const char *path = argc > 1 ? argv[1] : "/sys/kernel/security/tsem/external_tma/0";
  /* No SA_RESTART: a signal must interrupt poll(). */
  struct sigaction sa = {0};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  int fd = open(path, O_RDONLY);
  if (fd < 0) { perror(path); return 1; }
  static char buf[65536];
  unsigned long long records = 0, bytes = 0, first = 0, last = 0, gaps = 0, lost = 0, empty = 0;
  while (!stop) {
    ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n > 0) {
      /* The whole record came in one read (records are far below the buffer); the seek asks for the next. */
      lseek(fd, 0, SEEK_SET);
      records++;
      bytes += (unsigned long long)n;
      unsigned long long num = number_of(buf, (size_t)n);
      if (num) {
        if (!first) first = num;
        else if (num != last + 1) { gaps++; if (num > last) lost += num - last - 1; }
        last = num;
      }
      continue;
    }
    lseek(fd, 0, SEEK_SET);
    if (n < 0 && errno != ENODATA && errno != EINTR) { perror("read"); return 1; }
    if (n < 0 && errno == ENODATA) empty++;
    struct pollfd pf = {fd, POLLIN, 0};
    poll(&pf, 1, 100);
  }
  printf("export-reader: records=%llu bytes=%llu first=%llu last=%llu gaps=%llu lost=%llu empty=%llu\n", records,
         bytes, first, last, gaps, lost, empty);
  return 0;
}
