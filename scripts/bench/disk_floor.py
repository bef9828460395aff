"""What this machine's disk gives the store's log syncs, with nothing of Steward in the way.

A diagnostic, not part of `make bench` (docs/PERFORMANCE.md says when to use it).
Two threads on one temporary directory under DIR (default: the system's temporary directory,
where the HTTP bench's daemon keeps its data; the script prints which filesystem that is):

  - the log: writes LOG_KIB (default 48 KiB, what one batch of the store's write-ahead log holds
    at 5 000 restarts/s) in place into a preallocated file and `fdatasync`s it, RATE times a
    second (default 1 000, about the store's syncs a second at that load);
  - the checkpoint (unless MODE is `none`): every EVERY seconds (default 1), rewrites PAGES
    distinct random 4 KiB pages (default 2 400, what a checkpoint copies back after a second of
    that load) of a 20 MiB file, then syncs it at once (`burst`, what the store does), or writes
    it back in CHUNK-byte slices (default 1 MiB) with `sync_file_range` and a GAP-second pause
    between slices before the final sync (`paced`).

Prints the log syncs' percentiles and how long, per second of run, syncs slower than 1 ms took.

    python3 scripts/bench/disk_floor.py burst|paced|none [seconds]
"""

import ctypes
import os
import random
import sys
import tempfile
import threading
import time

MODE = sys.argv[1] if len(sys.argv) > 1 else "burst"
SECONDS = float(sys.argv[2]) if len(sys.argv) > 2 else 15.0
PAGES = int(os.environ.get("PAGES", "2400"))
EVERY = float(os.environ.get("EVERY", "1"))
RATE = int(os.environ.get("RATE", "1000"))
LOG_BYTES = int(os.environ.get("LOG_KIB", "48")) * 1024
CHUNK = int(os.environ.get("CHUNK", str(1 << 20)))
GAP = float(os.environ.get("GAP", "0.01"))

LOG_SIZE = 64 << 20
DB_SIZE = 20 << 20
PAGE = 4096
# sync_file_range(2): wait for write-back already under way, start it, wait for it.
SYNC_FILE_RANGE_ALL = 1 | 2 | 4
LIBC = ctypes.CDLL("libc.so.6", use_errno=True)


def preallocated(path, size):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
    os.write(fd, b"\0" * size)
    os.fsync(fd)
    return fd


def filesystem_of(path):
    """The device and type of the filesystem holding `path` (from /proc/self/mounts)."""
    best = ("?", "?", "")
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            device, mount, kind = line.split()[:3]
            if os.path.realpath(path).startswith(mount.rstrip("/") + "/") and len(mount) >= len(best[2]):
                best = (device, kind, mount)
    return f"{best[1]} on {best[0]}"


def main():
    if MODE not in ("burst", "paced", "none"):
        sys.exit(__doc__)
    with tempfile.TemporaryDirectory(prefix="steward-disk-floor-", dir=os.environ.get("DIR")) as tmp:
        print(f"in {tmp}: {filesystem_of(tmp)}")
        log = preallocated(os.path.join(tmp, "log"), LOG_SIZE)
        db = preallocated(os.path.join(tmp, "db"), DB_SIZE)
        stop = threading.Event()
        syncs = []

        def log_syncs():
            frames, offset = os.urandom(LOG_BYTES), 0
            due = time.perf_counter()
            while not stop.is_set():
                os.pwrite(log, frames, offset)
                offset = (offset + LOG_BYTES) % (LOG_SIZE - LOG_BYTES)
                started = time.perf_counter()
                os.fdatasync(log)
                syncs.append(time.perf_counter() - started)
                due += 1 / RATE
                time.sleep(max(0.0, due - time.perf_counter()))

        def checkpoints():
            page = os.urandom(PAGE)
            while not stop.is_set():
                started = time.perf_counter()
                for n in sorted(random.sample(range(DB_SIZE // PAGE), PAGES)):
                    os.pwrite(db, page, n * PAGE)
                if MODE == "paced":
                    for offset in range(0, DB_SIZE, CHUNK):
                        done = LIBC.sync_file_range(ctypes.c_int(db), ctypes.c_longlong(offset),
                                                    ctypes.c_longlong(CHUNK),
                                                    ctypes.c_uint(SYNC_FILE_RANGE_ALL))
                        if done != 0:
                            errno = ctypes.get_errno()
                            raise OSError(errno, f"sync_file_range: {os.strerror(errno)}")
                        time.sleep(GAP)
                os.fdatasync(db)
                stop.wait(max(0.0, EVERY - (time.perf_counter() - started)))

        threads = [threading.Thread(target=log_syncs)]
        if MODE != "none":
            threads.append(threading.Thread(target=checkpoints))
        for thread in threads:
            thread.start()
        time.sleep(SECONDS)
        stop.set()
        for thread in threads:
            thread.join()
        os.close(log)
        os.close(db)

    syncs.sort()
    n = len(syncs)
    if n == 0:
        sys.exit("no sync finished: run for longer")

    def ms(q):
        return syncs[min(n - 1, int(q * n))] * 1000

    slow = sum(s for s in syncs if s > 0.001) / SECONDS * 1000
    print(f"{MODE}: {n} log syncs; p50 {ms(0.5):.3f} p90 {ms(0.9):.3f} p99 {ms(0.99):.3f} "
          f"p99.9 {ms(0.999):.3f} max {syncs[-1] * 1000:.1f} ms; syncs over 1 ms took "
          f"{slow:.1f} ms per second; over 2 ms: {sum(1 for s in syncs if s > 0.002) / n:.2%}")


if __name__ == "__main__":
    main()
