package fusefs

import "golang.org/x/sys/unix"

// mapBuffer maps n bytes outside the Go heap, for memory the mount fills
// over and over (read windows, writes behind): in the heap, a few windows
// held raised the collector's goal, and every SPDY frame allocated until
// the next collection landed on fresh pages (a cold 100 MiB read faulted
// 35,000 pages, 17,000 without windows). In huge pages where the kernel
// allows (transparent_hugepage madvise or always): a fresh 4 MiB is then 2
// faults, not 1,024 (filling one ran at 0.3 GiB/s in 4 KiB pages, 10 GiB/s
// in 2 MiB ones).
func mapBuffer(n int) []byte {
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return make([]byte, n)
	}
	_ = unix.Madvise(b, unix.MADV_HUGEPAGE)
	return b
}

// unmapBuffer unmaps a buffer of mapBuffer (one from make is left to the
// collector).
func unmapBuffer(b []byte) { _ = unix.Munmap(b) }
