/*
 * The test guest's memory rewriter (scripts/build-test-guest.sh builds it static into the
 * initramfs as /bin/rewrite; a change here needs a bump of that script's version).
 *
 *   rewrite create FILE PCT SEED   write FILE (PCT % of the guest's RAM) with pseudo-random bytes
 *   rewrite FILE PCT SEED          rewrite PCT % of the guest's RAM inside FILE, in place, with new
 *                                  pseudo-random bytes, in disjoint runs of 4 KiB to 1 MiB (log-uniform
 *                                  in pages) scattered over the whole file; prints
 *                                  "iohelper-rewrite-done bytes=N runs=M"
 *
 * The guest's RAM is the sum of the "System RAM" ranges of /proc/iomem (what QEMU was given,
 * less a few firmware holes). FILE lives on tmpfs: its pages are scattered in guest-physical
 * memory the way the kernel allocated them, which is what an incremental save sees.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PAGE 4096ULL
#define MAX_RUN_PAGES 256 /* 1 MiB */
#define BUF_BYTES (MAX_RUN_PAGES * PAGE)

static uint64_t state;

/* splitmix64: fast enough under TCG, different for every seed. */
static uint64_t next(void) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static void fill(unsigned char *buf, uint64_t bytes) {
  for (uint64_t i = 0; i < bytes; i += 8) {
    uint64_t v = next();
    memcpy(buf + i, &v, 8);
  }
}

static void die(const char *what) {
  fprintf(stderr, "rewrite: %s: %s\n", what, strerror(errno));
  exit(1);
}

static uint64_t guest_ram(void) {
  FILE *f = fopen("/proc/iomem", "r");
  if (!f) die("/proc/iomem");
  char line[256];
  uint64_t total = 0;
  while (fgets(line, sizeof line, f)) {
    unsigned long long a, b;
    /* Top-level ranges only: nested ones (kernel code, ...) lie inside System RAM. */
    if (line[0] != ' ' && strstr(line, ": System RAM") && sscanf(line, "%llx-%llx", &a, &b) == 2) total += b - a + 1;
  }
  fclose(f);
  if (!total) {
    errno = ENOENT;
    die("no System RAM in /proc/iomem (not root?)");
  }
  return total;
}

static void write_all(int fd, const unsigned char *buf, uint64_t bytes, uint64_t offset) {
  while (bytes) {
    ssize_t n = pwrite(fd, buf, bytes, (off_t)offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("pwrite");
    }
    buf += n;
    bytes -= (uint64_t)n;
    offset += (uint64_t)n;
  }
}

/* 1 to 256 pages, log-uniform: as many 4 KiB runs as 1 MiB runs per octave. */
static uint64_t run_pages(void) {
  double u = (double)(next() >> 11) / 9007199254740992.0; /* [0, 1) */
  uint64_t p = 1;
  for (double x = u * 8.0 /* log2(256) */; x >= 1.0; x -= 1.0) p *= 2;
  /* within the octave, uniform */
  uint64_t top = p * 2 > MAX_RUN_PAGES ? MAX_RUN_PAGES : p * 2;
  return p + (top > p ? next() % (top - p + 1) : 0);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  int create = argc == 5 && strcmp(argv[1], "create") == 0;
  if (argc != 4 && !create) {
    fprintf(stderr, "usage: rewrite [create] FILE PCT SEED\n");
    return 2;
  }
  const char *file = argv[1 + create];
  double pct = strtod(argv[2 + create], NULL);
  state = strtoull(argv[3 + create], NULL, 10) * 0x2545f4914f6cdd1dULL + 1;
  uint64_t ram = guest_ram();
  uint64_t want = (uint64_t)(pct / 100.0 * (double)ram / PAGE); /* pages */
  static unsigned char buf[BUF_BYTES];

  if (create) {
    int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) die(file);
    for (uint64_t done = 0; done < want;) {
      uint64_t n = want - done < MAX_RUN_PAGES ? want - done : MAX_RUN_PAGES;
      fill(buf, n * PAGE);
      write_all(fd, buf, n * PAGE, done * PAGE);
      done += n;
    }
    close(fd);
    printf("iohelper-rewrite-ready bytes=%llu\n", (unsigned long long)(want * PAGE));
    return 0;
  }

  int fd = open(file, O_WRONLY);
  if (fd < 0) die(file);
  struct stat st;
  if (fstat(fd, &st) < 0) die("fstat");
  uint64_t pages = (uint64_t)st.st_size / PAGE;
  if (want > pages) {
    fprintf(stderr, "rewrite: %.2f %% of RAM is %llu pages, more than %s holds (%llu)\n", pct, (unsigned long long)want, file, (unsigned long long)pages);
    return 1;
  }
  /* Run lengths summing to `want`, then the other pages spread as gaps between them. */
  uint64_t cap = want + 1, count = 0;
  uint64_t *len = malloc(cap * sizeof *len);
  if (!len) die("malloc");
  for (uint64_t sum = 0; sum < want; count++) {
    uint64_t n = run_pages();
    if (n > want - sum) n = want - sum;
    len[count] = n;
    sum += n;
  }
  /* count + 1 gaps summing to pages - want: sorted uniform cut points. */
  uint64_t free_pages = pages - want;
  uint64_t *cut = malloc((count + 1) * sizeof *cut);
  if (!cut) die("malloc");
  for (uint64_t i = 0; i < count; i++) cut[i] = free_pages ? next() % (free_pages + 1) : 0;
  qsort(cut, count, sizeof *cut, cmp_u64);
  uint64_t at = 0, prev = 0;
  for (uint64_t i = 0; i < count; i++) {
    at += cut[i] - prev; /* the gap before run i */
    prev = cut[i];
    fill(buf, len[i] * PAGE);
    write_all(fd, buf, len[i] * PAGE, at * PAGE);
    at += len[i];
  }
  close(fd);
  printf("iohelper-rewrite-done bytes=%llu runs=%llu\n", (unsigned long long)(want * PAGE), (unsigned long long)count);
  return 0;
}
