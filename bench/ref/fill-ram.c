/*
 * The restore limit: copies the data extents (SEEK_DATA/SEEK_HOLE) of SRC's byte range
 * [BASE, BASE + LENGTH) into DST at offset - BASE, from THREADS threads, each reading IOSIZE
 * bytes at a time into an aligned buffer (O_DIRECT with -d) and pwrite()-ing them into DST,
 * which is created or truncated to LENGTH first. Holes stay holes. No checksums, no format, no
 * Node: what reading an image's data into a fresh RAM file costs on this host at least.
 * The benchmarks also use it to move cached RAM profiles between disk and tmpfs, because it
 * keeps holes where the source has holes and written zeros where it has written zeros
 * (cp --sparse turns both into holes).
 *
 * With -m the data is read straight into a shared mapping of DST instead (hugetlbfs has no
 * write()); DST's length must then be a multiple of its page size.
 *
 * usage: fill-ram [-d] [-m] [-z] [-t THREADS] [-s IOSIZE] [-b BASE] [-l LENGTH] SRC DST
 * prints: data bytes copied; with -z also how many of the copied 4 KiB pages were all zero
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct piece { uint64_t off, len; };
static struct piece *pieces;
static size_t npieces;
static atomic_size_t next_piece;
static int src_fd, dst_fd;
static uint64_t base, io_size = 8 << 20;
static atomic_uint_fast64_t copied, zero_pages;
static int count_zeros;
static unsigned char *dst_map;

static int page_is_zero(const unsigned char *p, uint64_t n) {
  const uint64_t *w = (const uint64_t *)p;
  uint64_t acc = 0;
  for (uint64_t i = 0; i < n / 8; i++) acc |= w[i];
  return acc == 0;
}

static void die(const char *what) {
  fprintf(stderr, "fill-ram: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void add_piece(uint64_t off, uint64_t len) {
  static size_t cap;
  if (npieces == cap) {
    cap = cap ? cap * 2 : 1024;
    pieces = realloc(pieces, cap * sizeof *pieces);
    if (!pieces) die("realloc");
  }
  pieces[npieces++] = (struct piece){off, len};
}

static void *worker(void *arg) {
  (void)arg;
  unsigned char *buf = NULL;
  if (!dst_map && posix_memalign((void **)&buf, 4096, io_size)) die("posix_memalign");
  for (;;) {
    size_t i = atomic_fetch_add(&next_piece, 1);
    if (i >= npieces) break;
    uint64_t off = pieces[i].off, len = pieces[i].len;
    /* O_DIRECT needs whole blocks: a piece ending inside the last block reads it whole. */
    uint64_t want = (len + 4095) & ~(uint64_t)4095;
    unsigned char *into = dst_map ? dst_map + (off - base) : buf;
    ssize_t n = pread(src_fd, into, want, (off_t)off);
    if (n < 0) die("pread");
    if ((uint64_t)n < len) { errno = EIO; die("short read"); }
    if (!dst_map && pwrite(dst_fd, buf, len, (off_t)(off - base)) != (ssize_t)len) die("pwrite");
    atomic_fetch_add(&copied, len);
    if (count_zeros) {
      uint64_t z = 0;
      for (uint64_t p = 0; p + 4096 <= len; p += 4096) z += page_is_zero(into + p, 4096);
      atomic_fetch_add(&zero_pages, z);
    }
  }
  free(buf);
  return NULL;
}

int main(int argc, char **argv) {
  int direct = 0, map_dst = 0, threads = 2, opt;
  uint64_t length = UINT64_MAX;
  while ((opt = getopt(argc, argv, "dmzt:s:b:l:")) != -1) {
    switch (opt) {
      case 'd': direct = 1; break;
      case 'z': count_zeros = 1; break;
      case 'm': map_dst = 1; break;
      case 't': threads = atoi(optarg); break;
      case 's': io_size = strtoull(optarg, NULL, 0); break;
      case 'b': base = strtoull(optarg, NULL, 0); break;
      case 'l': length = strtoull(optarg, NULL, 0); break;
      default: fprintf(stderr, "usage: fill-ram [-d] [-t THREADS] [-s IOSIZE] [-b BASE] [-l LENGTH] SRC DST\n"); return 2;
    }
  }
  if (argc - optind != 2 || threads < 1 || threads > 64 || io_size < 4096 || io_size % 4096) {
    fprintf(stderr, "usage: fill-ram [-d] [-t THREADS 1-64] [-s IOSIZE, 4 KiB multiple] [-b BASE] [-l LENGTH] SRC DST\n");
    return 2;
  }
  src_fd = open(argv[optind], O_RDONLY | (direct ? O_DIRECT : 0));
  if (src_fd < 0) die(argv[optind]);
  struct stat st;
  if (fstat(src_fd, &st)) die("fstat");
  if (length == UINT64_MAX) length = (uint64_t)st.st_size - base;
  dst_fd = open(argv[optind + 1], (map_dst ? O_RDWR : O_WRONLY) | O_CREAT | O_TRUNC, 0600);
  if (dst_fd < 0) die(argv[optind + 1]);
  if (ftruncate(dst_fd, (off_t)length)) die("ftruncate");
  if (map_dst) {
    dst_map = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED, dst_fd, 0);
    if (dst_map == MAP_FAILED) die("mmap");
  }
  for (uint64_t pos = base, end = base + length; pos < end;) {
    off_t d = lseek(src_fd, (off_t)pos, SEEK_DATA);
    if (d < 0 && errno == ENXIO) break;
    if (d < 0) die("SEEK_DATA");
    if ((uint64_t)d >= end) break;
    off_t h = lseek(src_fd, d, SEEK_HOLE);
    if (h < 0) die("SEEK_HOLE");
    uint64_t e = (uint64_t)h < end ? (uint64_t)h : end;
    for (uint64_t p = (uint64_t)d; p < e; p += io_size) add_piece(p, e - p < io_size ? e - p : io_size);
    pos = e;
  }
  pthread_t tid[64];
  for (int i = 0; i < threads; i++) pthread_create(&tid[i], NULL, worker, NULL);
  for (int i = 0; i < threads; i++) pthread_join(tid[i], NULL);
  if (dst_map && munmap(dst_map, length)) die("munmap");
  if (fdatasync(dst_fd)) die("fdatasync");
  if (count_zeros) printf("%llu %llu\n", (unsigned long long)atomic_load(&copied), (unsigned long long)atomic_load(&zero_pages));
  else printf("%llu\n", (unsigned long long)atomic_load(&copied));
  return 0;
}
