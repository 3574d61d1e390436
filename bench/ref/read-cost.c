/*
 * The cost of reading a RAM file's data extents, one thread, as the save's reader does it
 * (native/ram_reader.cc): `pread` copies each extent into one reused 8 MiB buffer; `mmap` maps
 * the file afresh, populates each extent (MADV_POPULATE_READ) and reads one word per page;
 * `fault` maps it too but takes one page fault per page (no MADV_POPULATE_READ). All
 * then sum one word per 4 KiB so the bytes are really there, and with DEST pwrite them to the
 * same offsets of DEST (created, 0600). Prints user, sys and wall seconds (getrusage), the
 * bytes read and the page count.
 *   cc -O2 -o read-cost bench/ref/read-cost.c && ./read-cost pread|mmap|fault FILE [DEST]
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

static double secs(struct timeval t) { return t.tv_sec + t.tv_usec / 1e6; }

int main(int argc, char** argv) {
  if ((argc != 3 && argc != 4) || (strcmp(argv[1], "pread") && strcmp(argv[1], "mmap") && strcmp(argv[1], "fault"))) {
    fprintf(stderr, "usage: %s pread|mmap|fault FILE [DEST]\n", argv[0]);
    return 2;
  }
  int mapped = strcmp(argv[1], "pread") != 0, populate = !strcmp(argv[1], "mmap");
  int fd = open(argv[2], O_RDONLY);
  struct stat st;
  if (fd < 0 || fstat(fd, &st)) return perror(argv[2]), 1;
  int out = argc == 4 ? open(argv[3], O_WRONLY | O_CREAT | O_TRUNC, 0600) : -1;
  if (argc == 4 && out < 0) return perror(argv[3]), 1;
  const size_t block = 8 << 20;
  uint8_t* buf = NULL;
  uint8_t* map = NULL;
  if (mapped) {
    map = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) return perror("mmap"), 1;
  } else if (posix_memalign((void**)&buf, 2 << 20, block)) {
    return perror("posix_memalign"), 1;
  }
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  uint64_t sum = 0, bytes = 0;
  for (off_t pos = 0; pos < st.st_size;) {
    off_t d = lseek(fd, pos, SEEK_DATA);
    if (d < 0) break;
    off_t h = lseek(fd, d, SEEK_HOLE);
    if (h < 0) return perror("lseek"), 1;
    if (populate) madvise(map + d, h - d, MADV_POPULATE_READ);
    for (off_t at = d; at < h;) {
      size_t n = h - at < (off_t)block ? (size_t)(h - at) : block;
      const uint8_t* p = map ? map + at : buf;
      if (!mapped && pread(fd, buf, n, at) != (ssize_t)n) return perror("pread"), 1;
      for (size_t k = 0; k < n; k += 4096) sum += *(const uint64_t*)(p + k);
      if (out >= 0 && pwrite(out, p, n, at) != (ssize_t)n) return perror("pwrite"), 1;
      at += n;
      bytes += n;
    }
    pos = h;
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("%s user %.3f sys %.3f wall %.3f bytes %llu pages %llu (sum %llx)\n", argv[1], secs(ru.ru_utime), secs(ru.ru_stime),
         (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9, (unsigned long long)bytes, (unsigned long long)(bytes / 4096),
         (unsigned long long)(sum & 0xff));
  return 0;
}
