package fusefs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// rangeFile is a RangeReader over bytes, counting the ranges asked for;
// failAt, if set, makes the stream of the window at that offset fail.
type rangeFile struct {
	data   []byte
	asked  atomic.Int64
	failAt int64
	fail   bool
}

func (r *rangeFile) ReadRange(_ context.Context, _ string, off, n int64) (io.ReadCloser, error) {
	r.asked.Add(1)
	if r.fail && off == r.failAt {
		return io.NopCloser(io.MultiReader(bytes.NewReader(r.data[off:off+100]), errReader{})), nil
	}
	end := min(off+n, int64(len(r.data)))
	if off > end {
		off = end
	}
	return io.NopCloser(bytes.NewReader(r.data[off:end])), nil
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("stream broke") }

// readInto reads as the FUSE server does: the answer's bytes, then Done.
func readInto(s *sequential, dest []byte, off int64) (int, bool) {
	r, ok := s.read(off, len(dest))
	if !ok {
		return 0, false
	}
	defer r.Done()
	b, _ := r.Bytes(nil)
	return copy(dest, b), true
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(1)).Read(b)
	return b
}

// A file read in order, the kernel's way (1 MiB reads, several at once and
// out of order), gets exactly its bytes, each window asked for once.
func TestSequentialReadsInWindows(t *testing.T) {
	data := randomBytes(3*streamWindow + 12345)
	r := &rangeFile{data: data}
	s := &sequential{remote: r, path: "/f", size: int64(len(data))}
	defer s.release()
	got := make([]byte, len(data))
	const chunk = 1 << 20
	// The kernel's first read of a file is its start, alone.
	if n, ok := readInto(s, got[:chunk], 0); !ok || n != chunk {
		t.Fatalf("first read: %d %v", n, ok)
	}
	for base := chunk; base < len(data); base += 4 * chunk {
		var wg sync.WaitGroup
		for i := 3; i >= 0; i-- { // the last of four first
			off := base + i*chunk
			if off >= len(data) {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				end := min(off+chunk, len(data))
				n, ok := readInto(s, got[off:end], int64(off))
				if !ok || n != end-off {
					t.Errorf("read at %d: %d bytes, ok %v", off, n, ok)
				}
			}()
		}
		wg.Wait()
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the bytes read differ from the file's")
	}
	if n := r.asked.Load(); n != 4 {
		t.Errorf("%d ranges asked for, want 4 (one per window)", n)
	}
	// At the size known at open: ReadAt's to answer (the file may have
	// grown: tail -f), no stream.
	if n, ok := readInto(s, make([]byte, 10), int64(len(data))); ok {
		t.Errorf("read at the size known at open served by a stream: %d bytes", n)
	}
	if n := r.asked.Load(); n != 4 {
		t.Errorf("%d ranges asked for after a read at the end, want still 4", n)
	}
}

// A read that does not continue one (a seek) is left to ReadAt; a file
// that shrank since its open reads short (its end); a stream that breaks
// sends this file's reads to ReadAt from then on.
func TestSequentialLeavesTheRestToReadAt(t *testing.T) {
	data := randomBytes(2 * streamWindow)
	s := &sequential{remote: &rangeFile{data: data}, path: "/f", size: int64(len(data))}
	if _, ok := readInto(s, make([]byte, 4096), 5<<20+4096); ok {
		t.Error("a first read in the middle was served by a stream")
	}
	s.release()

	shrunk := &sequential{remote: &rangeFile{data: data[:streamWindow+10]}, path: "/f", size: int64(len(data))}
	buf := make([]byte, 1<<20)
	total := 0
	for off := 0; ; off += len(buf) {
		n, ok := readInto(shrunk, buf, int64(off))
		if !ok {
			t.Fatalf("read at %d not served", off)
		}
		total += n
		if n < len(buf) {
			break
		}
	}
	shrunk.release()
	if total != streamWindow+10 {
		t.Errorf("read %d bytes of a file that shrank to %d", total, streamWindow+10)
	}

	broken := &sequential{remote: &rangeFile{data: data, fail: true, failAt: 0}, path: "/f", size: int64(len(data))}
	defer broken.release()
	if _, ok := readInto(broken, make([]byte, 1<<20), 0); ok {
		t.Fatal("a read from a broken stream was served")
	}
	if _, ok := readInto(broken, make([]byte, 1<<20), 1<<20); ok {
		t.Error("after a broken stream, reads still go to streams")
	}
}

// Small files are not streamed, and a remote without read streams is
// read as before.
func TestSequentialOnlyForBigFilesOfRangeReaders(t *testing.T) {
	if newSequential(&rangeRemote{}, "/f", streamMin-1) != nil {
		t.Error("a small file is streamed")
	}
	if newSequential(&rangeRemote{}, "/f", streamMin) == nil {
		t.Error("a big file of a range reader is not streamed")
	}
	if newSequential(ownedRemote{Remote: &rangeRemote{}}, "/f", streamMin) == nil {
		t.Error("a range reader under the owner mapping is not found")
	}
	if newSequential(plainRemote{}, "/f", streamMin) != nil {
		t.Error("a remote without read streams is streamed")
	}
}

type rangeRemote struct {
	plainRemote
	rangeFile
}

type plainRemote struct{ Remote }

// A file kept open but no longer read lets its windows (memory, and slots
// other files need) go once they are stale.
func TestSequentialWindowsExpire(t *testing.T) {
	data := randomBytes(3 * streamWindow)
	s := &sequential{remote: &rangeFile{data: data}, path: "/f", size: int64(len(data))}
	defer s.release()
	before := len(windowSlots)
	if _, ok := readInto(s, make([]byte, 1<<20), 0); !ok {
		t.Fatal("first read not served")
	}
	if len(windowSlots) == before {
		t.Fatal("no window holds a slot")
	}
	deadline := time.Now().Add(5 * windowFresh)
	for len(windowSlots) != before && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := len(windowSlots); n != before {
		t.Fatalf("%d slots still held after the windows went stale", n-before)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.windows) != 0 {
		t.Errorf("%d windows kept", len(s.windows))
	}
}

// An answer is slices of its window, which go-fuse writes with writev; the
// window's memory is not given back (for another window to overwrite)
// until the kernel has the bytes (Done), also when the window was read to
// its end and let go before that.
func TestWindowHeldUntilItsAnswerIsSent(t *testing.T) {
	data := randomBytes(streamWindow)
	s := &sequential{remote: &rangeFile{data: data}, path: "/f", size: int64(len(data))}
	defer s.release()
	r, ok := s.read(0, len(data))
	if !ok {
		t.Fatal("read not served")
	}
	if _, writev := any(r).(interface {
		Slices() ([][]byte, fuse.Status)
	}); !writev {
		t.Fatal("the answer is copied, not written from the window")
	}
	s.mu.Lock()
	kept := len(s.windows)
	s.mu.Unlock()
	if kept != 0 {
		t.Fatalf("%d windows kept after the whole window was read", kept)
	}
	w := r.windows[0]
	held := func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.buf != nil
	}
	time.Sleep(50 * time.Millisecond) // the window's fetch has ended
	if !held() {
		t.Fatal("the window's memory was given back before its answer was sent")
	}
	if b, _ := r.Bytes(nil); !bytes.Equal(b, data) {
		t.Fatal("the answer's bytes differ from the file's")
	}
	r.Done()
	for deadline := time.Now().Add(2 * time.Second); held(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the window's memory still held after its answer was sent")
		}
	}
}
