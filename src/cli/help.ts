/** --help text. The first line is libvirt_iohelper's, byte for byte, so tools that parse it keep working. */
export function helpText(argv0: string): string {
  return `Usage: ${argv0} FILENAME FD
       ${argv0} --fd N [--direct] [--name LABEL] [--progress[=FD]] [--buffer-size SIZE] [--inflight N]

Copies a QEMU migration stream between a pipe and a file, overlapping reads and writes.

Form 1 (libvirt_iohelper's contract): FD is the file. FILENAME is only used in messages.
  If FD is write-only, the stream is read from stdin and written to FD (save);
  if FD is read-only, FD is read and the stream written to stdout (restore).
  An O_RDWR FD is an error. O_DIRECT is used exactly when FD was opened with it.

Form 2: --fd N names the file fd, with the same direction rule.
  --direct            set O_DIRECT on fd N (fcntl F_SETFL); fail if the filesystem refuses it
  --prefer-direct     set O_DIRECT if possible, else warn and use buffered I/O that drops
                      written pages from the page cache
  --name LABEL        name used in messages (default "fd N")
  --progress[=FD]     progress as JSON lines on FD (default stderr; a bar if stderr is a TTY)
  --buffer-size SIZE  bytes per I/O (default 1M; rounded up to the O_DIRECT alignment)
  --inflight N        file I/Os in flight at once (default 2)

Both forms start at the file's current position, so a manager may write its own header
first. With O_DIRECT an unaligned start is handled: the head up to the next alignment
boundary (statx DIOALIGN, else 64 KiB) is written or read without O_DIRECT, the rest aligned.
A save pads its last block to the alignment, then truncates the file to the true size, and
calls fdatasync before it exits 0. On failure the last stderr line is
  ${argv0}: failure with FILENAME: <message>
and the exit status is 1. A reader that goes away (EPIPE) is such a failure, not a signal.

Parallel RAM image (guest RAM in shared files, QEMU migrating with x-ignore-shared):
  ${argv0} save    --fd N | --image PATH  --ram NAME=PATH|NAME=fd:K ... [--direct]
                   [--jobs J] [--chunk SIZE] [--min-hole SIZE] [--job-size SIZE]
                   [--no-checksums] [--no-stream-check] [--compress[=zstd[:LEVEL]]] [--base BASE]
                   [--progress[=FD]] [--ram-read=auto|pread|mmap]
      Reads QEMU's device-state stream on stdin; the RAM files are copied by J worker
      threads (default twice the CPUs, 2 to 8) to fixed 1 MiB-aligned offsets of the image
      (O_DIRECT with --direct). --ram-read says how RAM is read: pread into a buffer each
      thread keeps, or through a mapping of the RAM file; auto (default) maps hugetlbfs and
      preads the rest. --progress reports which ran (ramRead). The image is marked complete only after all data is synced.
      --image PATH writes a new file beside PATH (.NAME.iohelper-PID-HEX) and renames it over
      PATH only then: a save that fails or is interrupted removes it and leaves PATH (the last
      good image) as it was, and a reader that maps the old image keeps it unchanged (a
      kill -9 leaves the hidden file behind; the next run in that directory removes it once
      its process is gone). Files iohelper creates are 0600 whatever the umask. One file in
      two roles (e.g. --ram x=fd:0 with stdin on it) is refused. --fd N (a manager's file)
      is written in place: truncated first, so a save that fails leaves an image every reader refuses. A save
      fails when the device-state stream is not a complete QEMU stream (QEVM … vmdesc): QEMU
      dying mid-migration only closes the pipe (--no-stream-check for other producers). Zero runs of at least --min-hole (default 64K) stay holes; --chunk
      (default 8M) is the CRC-32C granularity.
      --compress writes a compressed image (format version 2): each --chunk of RAM is stored
      as one zstd frame at LEVEL (default 1; -7 fastest .. 19 smallest; 0 stores raw), raw
      when zstd does not shrink it, or not at all when it is zero, packed one after another;
      the device state follows the last chunk. Smaller and, on slow storage, faster; but
      clones and --lazy cannot map it (see convert). Needs an addon built with libzstd.
      Every image records a keyed hash (AES-128-GMAC) of each 64 KiB unit of RAM. --base BASE
      writes a delta (format version 3): only the units whose hash differs from BASE's are stored (zero
      units and unchanged units take no space), with --compress compressed. BASE may itself
      be a delta (a chain of at most 16); the delta records BASE's identity and its path
      relative to the delta's directory. BASE and its whole chain are checked first with
      the rules restore applies (a base compressed in chunks larger than the unit is
      refused: convert it first), and BASE again just before the delta commits: a delta
      whose base was saved again or replaced meanwhile is not committed (PATH stays as it
      was). restore reads the chain; a missing, replaced, changed or incomplete base is
      refused before anything is written. Saving onto BASE or any image of its chain is
      refused. Clones and --lazy need convert --flatten first.
  ${argv0} restore --fd N | --image PATH  --ram NAME=PATH|NAME=fd:K ... [--direct]
                   [--jobs J] [--no-verify] [--force] [--base BASE] [--progress[=FD]]
      Validates the image and the RAM targets before writing anything: names and sizes must
      match; a target must be absent, empty or exactly the block's size, a regular file (not
      a symlink), not hard-linked (--force allows it), not the image or another target, and
      its filesystem must have room for the block's data. Every chunk's CRC-32C is checked
      (unless --no-verify). A fresh PATH target (absent, empty, or provably all holes: no
      block allocated and no data where SEEK_DATA looks, as a QEMU started with -incoming
      defer leaves its RAM file) is filled in place, so a process that
      maps it sees the restored RAM; a failure punches it back to holes, truncates it back to
      empty or removes it. A PATH target holding data is filled through a temporary file
      beside it, renamed over it only once every chunk verified, so a refused, corrupted or
      interrupted restore leaves it as it was; it is refused (EBUSY) while another process has
      it open or mapped, which would keep the old memory. fd:K targets (open read-write) are
      written in place. Then the device state goes to stdout for QEMU's migrate-incoming; it
      is checked against its CRC-32C first, before any target is touched (--no-verify skips
      this too).
      A compressed image is decompressed by the J workers straight into the RAM files; a chunk
      that does not decode to exactly its size, or whose CRC differs, fails the restore.
      A delta is restored from its chain: each unit from the top-most image that holds it,
      every base checked first to be the very image the delta was saved against. A base is
      found at the path the delta records, relative to its directory (an absolute one is
      refused), and opened only as a regular file, never through a symbolic link; a
      refusal names that path, never what the file holds. --base BASE reads the delta's
      base from BASE instead (a chain that was moved): BASE is checked the same way, and
      the layers below it are found from BASE.
  ${argv0} inspect IMAGE [--json] [--base BASE]
      Describes an iohelper image (exit 2 if incomplete or refused, if its device state
      fails its CRC-32C (images from older iohelpers have none), or if its chain of bases is
      refused; for a compressed one the ratio and chunk kinds per block; for a delta each
      layer of its chain and the units and bytes it supplies), a libvirt save image or a
      raw QEMU stream. --base BASE: a delta's base, as for restore. The format is
      docs/FORMAT.md.
  ${argv0} convert SOURCE TARGET [--compress[=zstd[:LEVEL]]] [--flatten] [--base BASE] [--jobs J] [--direct] [--progress[=FD]]
      Writes TARGET (which must not exist) as a mappable image, or with --compress as a
      compressed one, from a valid SOURCE image (its blocks of one chunk size). The RAM passes
      through sparse scratch files beside TARGET (room for the RAM's data is needed there),
      every chunk's CRC is checked when SOURCE has checksums, and TARGET appears only when
      complete (never replacing a file). A delta SOURCE needs --flatten: TARGET is then one
      standalone image of the delta and its bases; --base BASE: its base, as for restore.

Whole VMs over QMP (guest RAM as -object memory-backend-file,…,mem-path=/dev/shm/F,share=on):
  ${argv0} vm save --qmp SOCKET --out IMAGE [--direct] [--jobs J] [--compress[=zstd[:LEVEL]]] [--base BASE] [--progress[=FD]] [--stream]
      Checks its RAM backends are shared files, IMAGE, BASE and its chain, then stops the guest
      (it stays paused after a save) and saves through the parallel image (x-ignore-shared),
      in this process (no helper process), into a new file beside IMAGE, renamed over it once
      the save committed and QEMU completed. A save refused by its checks never stops the
      guest; a save that fails, that QEMU refuses, or that SIGINT/SIGTERM interrupts cancels
      QEMU's migration, removes the new file, leaves IMAGE as it was, resumes a guest that was
      running, and ends with one line and exit 1. --stream uses the classic stream path (a
      helper process in libvirt_iohelper's form), which works with any RAM; it writes IMAGE in
      place: a failure or interrupt leaves it incomplete. --base BASE saves a delta against
      BASE (see save --base); vm restore reads its chain. --progress as for save (without it,
      a bar when stderr is a terminal).
  ${argv0} vm restore --image IMAGE [--direct] [--jobs J] [--no-verify] [--progress[=FD]] [--lazy [--no-prefetch] [--record-ws SECONDS]] [--cont] [--log-dir D] -- QEMU ARGS
      Fills the RAM files named by the memory-backend-file objects in QEMU ARGS (ids = the
      image's block names, share=on), starts QEMU with -incoming defer and loads the device
      state once every chunk verified. When every RAM file is fresh (absent, empty or all
      holes) it is filled in place while QEMU starts on it; a RAM file holding data is
      replaced first and QEMU started after. --no-verify skips the CRC checks. A QEMU that
      exits meanwhile stops the fill at once; the error gives its exit status and its last
      words. --lazy maps the image's RAM instead (pages read on demand): that VM's RAM is then
      private, not a shared file, so its next save takes the --stream path. A lazy restore
      (and a clone) reads every chunk once and checks its CRC while QEMU starts, before QEMU
      loads the device state: a corrupted image is refused and no guest runs on it; with
      --no-verify it is mapped unchecked (the guest reads what the file holds).
      --record-ws SECONDS resumes the guest and records which image pages it touches in that
      window, in first-touch order (from QEMU's /proc/PID/pagemap), into IMAGE.ws beside the
      image (without prefetching, which would blur the record). A lazy restore or clone of an image with IMAGE.ws reads those pages into the page
      cache in large parallel reads while QEMU starts and the guest runs (the guest never
      waits on it; the command exits when it is done); --no-prefetch skips that. A damaged
      or stale IMAGE.ws (recorded from another image) is ignored with a warning.
  ${argv0} vm clone --image IMAGE --count N [--no-prefetch] [--no-verify] [--progress[=FD]] [--cont] [--log-dir D] -- QEMU ARGS
      Starts N QEMUs whose RAM maps the image copy-on-write (read-only file, share=off): no RAM
      is copied and the clones share the image's page cache (and its prefetched working set).
      Every chunk is checked first, as for a lazy restore (--no-verify trusts the image).
  Restored and cloned QEMUs keep running after the command exits (their output is appended
  to NAME.log in the log dir; an error quotes only this run's lines); it prints each one's
  pid and QMP socket. Without --cont they are paused.

In libvirt's place (root):
  ${argv0} libvirt-install [--status | --uninstall] [--target PATH]
      Puts a wrapper running this iohelper at libvirt's helper path (default
      /usr/lib/libvirt/libvirt_iohelper) and keeps libvirt's own helper aside (dpkg-divert, or
      PATH.iohelper-orig); --uninstall puts it back byte for byte; --status says which is there.
`;
}
