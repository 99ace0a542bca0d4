package fusefs

import (
	"context"
	"io"
	"sync"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// RangeReader is a Remote that can send a range of a file in one stream
// (the agent's read stream: sendfile in the pod, no per-packet work on
// either side). A file read in order is read through it in windows; any
// other read, and any read a stream fails, goes through File.ReadAt.
type RangeReader interface {
	ReadRange(ctx context.Context, p string, off, n int64) (io.ReadCloser, error)
}

const (
	// streamMin: smaller files are read whole at open or in a few ReadAts.
	streamMin = 1 << 20
	// streamWindow is what one stream asks for: big enough that opening a
	// stream (one round trip, and a stream pair the cluster pays ~5 ms of
	// CPU for) is rare, small enough to hold a few in memory. With 8 MiB
	// rather than 4, a cold 100 MiB read ran at ~116 MiB/s, not ~103
	// (alternating runs), fewer streams sharing the link at once.
	streamWindow = 8 << 20
	// windowsPerFile are fetched ahead of a reader, at most; the kernel
	// reads ahead 16 MiB (readahead_linux.go).
	windowsPerFile = 2
	// windowFresh: a window unused for this long since it came is not
	// served from (the file may have changed in the pod; a new window is
	// asked for instead).
	windowFresh = time.Second
	// windowStall: a stream that sends nothing for this long has failed.
	windowStall = 10 * time.Second
)

// windowSlots bounds the windows held by all files at once (96 MiB), and
// windowBufs keeps a few of their buffers for the next windows (mapping
// one is cheap, its first touch is not: mapBuffer).
var (
	windowSlots = make(chan struct{}, 12)
	windowBufs  = make(chan []byte, 3)
)

// window is one range of a file being read from a stream.
type window struct {
	start int64
	at    time.Time
	buf   []byte

	mu        sync.Mutex
	cond      *sync.Cond
	filled    int   // bytes of buf here so far
	done      bool  // the stream ended: filled is all there is (EOF)
	err       error // the stream failed: serve nothing from here
	cancel    context.CancelFunc
	closed    sync.Once
	cancelled bool // closed by its file
	users     int  // its fetch and the reads copying from it: buf is theirs
	served    int  // bytes copied out of it
}

// sequential reads one open file's ranges through read streams.
type sequential struct {
	remote RangeReader
	path   string
	size   int64

	mu      sync.Mutex
	windows []*window
	lastEnd int64
	ahead   int64 // the furthest window opened
	failed  bool  // a stream failed: this file reads by ReadAt from now on
}

func newSequential(r Remote, path string, size int64) *sequential {
	rr := behind[RangeReader](r)
	if rr == nil || size < streamMin {
		return nil
	}
	return &sequential{remote: rr, path: path, size: size}
}

// read answers size bytes at off from the windows, opening the windows it
// needs when the read is in order. ok false: nothing was served, read it
// another way; a short answer is the file's end (it shrank since its open:
// the file server said so). The answer holds slices of the windows, which
// stay theirs until the kernel has them (Done).
func (s *sequential) read(off int64, size int) (r *windowRead, ok bool) {
	r = &windowRead{}
	for r.size < size {
		at := off + int64(r.size)
		if at >= s.size {
			// Past the size known at open: the file may have grown (a log
			// read with tail -f), so ReadAt answers, the end included.
			r.Done()
			return nil, false
		}
		w := s.windowFor(at, r.size == 0)
		if w == nil {
			r.Done()
			return nil, false
		}
		part, eof, ok := w.sliceAt(at, size-r.size)
		if !ok {
			if !w.dropped() {
				s.fail() // not one this file let go of: streams fail here
			}
			r.Done()
			return nil, false
		}
		r.add(w, part)
		if w.consumed(len(part)) {
			s.drop(w)
		}
		if eof {
			break // the file is shorter than it was at open
		}
	}
	s.mu.Lock()
	s.lastEnd = off + int64(r.size)
	s.mu.Unlock()
	return r, true
}

// windowRead is a read's answer: slices of windows, which the FUSE server
// writes to the kernel with writev (withSlice) rather than copying them
// into its own buffer first: one copy of each byte fewer (a cold 100 MiB
// read copied 100 MiB into fresh buffers, ~120 ms of CPU).
type windowRead struct {
	parts   [][]byte
	windows []*window
	size    int
}

var _ fuse.ReadResult = (*windowRead)(nil)

func (r *windowRead) add(w *window, part []byte) {
	if len(part) == 0 {
		w.leave()
		return
	}
	r.parts = append(r.parts, part)
	r.windows = append(r.windows, w)
	r.size += len(part)
}

// Slices is what go-fuse writes with writev, the parts as they are.
func (r *windowRead) Slices() ([][]byte, fuse.Status) { return r.parts, fuse.OK }

// Bytes is the answer in one piece, for a server that cannot writev.
func (r *windowRead) Bytes(buf []byte) ([]byte, fuse.Status) {
	buf = buf[:0]
	for _, p := range r.parts {
		buf = append(buf, p...)
	}
	return buf, fuse.OK
}

func (r *windowRead) Size() int { return r.size }

// Done gives the windows back: the kernel has the bytes.
func (r *windowRead) Done() {
	for _, w := range r.windows {
		w.leave()
	}
	r.windows, r.parts = nil, nil
}

// windowFor is the fresh window holding off, opened if the read is in
// order (first: where the read starts) or continues one. Windows ahead of
// it are opened too, up to windowsPerFile.
func (s *sequential) windowFor(off int64, first bool) *window {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed || off >= s.size {
		return nil
	}
	start := off - off%streamWindow
	var found *window
	keep := s.windows[:0]
	for _, w := range s.windows {
		switch {
		case w.stale():
			// Not read for a while (part of it went by SFTP, say). A
			// window is not let go for being far behind the newest read:
			// the kernel's reads in flight were seen spanning 56 MiB (32
			// background reads of 1 MiB, answered out of order), and a
			// window let go under a read still coming was fetched again.
			w.close()
		default:
			keep = append(keep, w)
			if w.start == start {
				found = w
			}
		}
	}
	s.windows = keep
	if found == nil {
		inOrder := !first || off == 0 || off == s.lastEnd || len(s.windows) > 0
		if !inOrder {
			return nil
		}
		if found = s.open(start); found == nil {
			return nil
		}
	}
	// Ahead of the reader, past what was opened already (a window read
	// and let go is not asked for again).
	for next := max(start, s.ahead) + streamWindow; next < s.size && next < start+windowsPerFile*streamWindow; next += streamWindow {
		if !s.has(next) && s.open(next) == nil {
			break
		}
	}
	return found
}

func (s *sequential) has(start int64) bool {
	for _, w := range s.windows {
		if w.start == start {
			return true
		}
	}
	return false
}

// open starts fetching the window at start, if a slot is free.
func (s *sequential) open(start int64) *window {
	select {
	case windowSlots <- struct{}{}:
	default:
		return nil
	}
	n := min(int64(streamWindow), s.size-start)
	ctx, cancel := context.WithCancel(context.Background())
	var buf []byte
	select {
	case buf = <-windowBufs:
	default:
		buf = mapBuffer(streamWindow)
	}
	w := &window{start: start, at: time.Now(), buf: buf[:n], users: 1}
	w.cancel = func() {
		w.mu.Lock()
		w.cancelled = true
		w.mu.Unlock()
		cancel()
	}
	w.cond = sync.NewCond(&w.mu)
	// A file kept open but no longer read lets its windows go.
	var expire func()
	expire = func() {
		switch {
		case w.dropped():
		case w.stale():
			s.drop(w)
		default:
			time.AfterFunc(windowFresh, expire)
		}
	}
	time.AfterFunc(windowFresh, expire)
	s.windows = append(s.windows, w)
	s.ahead = max(s.ahead, start)
	go w.fetch(ctx, s.remote, s.path)
	return w
}

// fetch reads the window's range from a stream, waking readers as bytes
// come.
func (w *window) fetch(ctx context.Context, r RangeReader, path string) {
	defer w.leave()
	rc, err := r.ReadRange(ctx, path, w.start, int64(len(w.buf)))
	if err != nil {
		w.finish(0, err)
		return
	}
	defer rc.Close()
	// A stream that stops sending fails its window (its reads then go by
	// SFTP) rather than hold them.
	stalled := time.AfterFunc(windowStall, func() { rc.Close() })
	defer stalled.Stop()
	for {
		w.mu.Lock()
		filled := w.filled
		w.mu.Unlock()
		if filled == len(w.buf) {
			w.finish(0, nil)
			return
		}
		n, err := rc.Read(w.buf[filled:])
		stalled.Reset(windowStall)
		if ctx.Err() != nil {
			w.finish(0, ctx.Err()) // closed by its file: not the file's end
			return
		}
		if err == io.EOF {
			w.finish(n, nil) // the file is shorter than when it was opened
			return
		}
		if err != nil {
			w.finish(n, err)
			return
		}
		w.mu.Lock()
		w.filled += n
		w.mu.Unlock()
		w.cond.Broadcast()
	}
}

func (w *window) finish(n int, err error) {
	w.mu.Lock()
	w.filled += n
	w.done, w.err = true, err
	w.at = time.Now() // fresh from here
	w.mu.Unlock()
	w.cond.Broadcast()
}

// sliceAt is up to n bytes of the window at off once they are here, held
// for the caller until it leaves the window; eof when the window ended
// before n; ok false when it failed (nothing held).
func (w *window) sliceAt(off int64, n int) (part []byte, eof, ok bool) {
	from := int(off - w.start)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cancelled {
		return nil, false, false
	}
	want := min(from+n, len(w.buf))
	for w.filled < want && !w.done {
		w.cond.Wait()
	}
	if w.err != nil || w.cancelled {
		return nil, false, false
	}
	w.users++
	if from >= w.filled {
		return nil, true, true
	}
	return w.buf[from:min(want, w.filled)], w.done && w.filled < want, true
}

// consumed counts got bytes copied out of the window, and says when all
// of it was: the kernel reads each range once, so it is not needed again.
func (w *window) consumed(got int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.served += got
	w.at = time.Now() // a window being read stays
	return w.done && w.served >= w.filled
}

// stale says a window is done and older than windowFresh: the file may have
// changed in the pod since.
func (w *window) stale() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.done && time.Since(w.at) > windowFresh
}

// drop closes a window and takes it out of the file's list.
func (s *sequential) drop(w *window) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, other := range s.windows {
		if other == w {
			s.windows = append(s.windows[:i:i], s.windows[i+1:]...)
			break
		}
	}
	w.close()
}

// leave ends a use of the buffer; the last one after close gives it back.
func (w *window) leave() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.users--
	w.free()
}

// free gives the buffer back once the window is closed and unused.
func (w *window) free() {
	if w.cancelled && w.users == 0 && w.buf != nil {
		select {
		case windowBufs <- w.buf[:cap(w.buf)]:
		default:
			unmapBuffer(w.buf[:cap(w.buf)])
		}
		w.buf = nil
	}
}

// close stops the window's stream and frees its slot; its memory goes
// with its last reader.
func (w *window) close() {
	w.closed.Do(func() {
		w.cancel()
		<-windowSlots
		w.mu.Lock()
		w.free()
		w.mu.Unlock()
	})
}

// dropped says the window was closed by its file (not failed by itself).
func (w *window) dropped() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cancelled
}

func (s *sequential) fail() {
	s.mu.Lock()
	s.failed = true
	s.mu.Unlock()
}

// release ends every window (the file was closed).
func (s *sequential) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range s.windows {
		w.close()
	}
	s.windows = nil
}
