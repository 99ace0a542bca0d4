package fusefs

import "golang.org/x/sys/unix"

// newWindowBuffer maps a window's buffer outside the Go heap: in the heap,
// a few windows held raised the collector's goal, and every SPDY frame
// allocated until the next collection landed on fresh pages (a cold
// 100 MiB read faulted 35,000 pages, 17,000 without windows).
func newWindowBuffer() []byte {
	b, err := unix.Mmap(-1, 0, streamWindow, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return make([]byte, streamWindow)
	}
	return b
}

// freeWindowBuffer unmaps a buffer of newWindowBuffer (one from make is
// left to the collector).
func freeWindowBuffer(b []byte) { _ = unix.Munmap(b) }
