package fusefs

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// behindRemote is a remote whose writes take a while, counting how many run
// at once, and failing for files named "bad*".
type behindRemote struct {
	Remote
	now, most atomic.Int32
}

func (r *behindRemote) OpenFile(p string, flags int) (File, error) {
	f, err := r.Remote.OpenFile(p, flags)
	if err != nil {
		return nil, err
	}
	return &behindFile{File: f, r: r, bad: strings.HasPrefix(filepath.Base(p), "bad")}, nil
}

type behindFile struct {
	File
	r   *behindRemote
	bad bool
}

func (f *behindFile) WriteAt(b []byte, off int64) (int, error) {
	n := f.r.now.Add(1)
	defer f.r.now.Add(-1)
	for {
		most := f.r.most.Load()
		if n <= most || f.r.most.CompareAndSwap(most, n) {
			break
		}
	}
	time.Sleep(5 * time.Millisecond) // a round trip
	if f.bad {
		return 0, syscall.ENOSPC
	}
	return f.File.WriteAt(b, off)
}

// Writes go to the pod several at once while the writer writes on; close
// returns once they are all there, and a read on the same descriptor sees
// them; a write the pod refuses makes close fail with its error.
func TestWritesBehind(t *testing.T) {
	remoteDir := t.TempDir()
	r := &behindRemote{}
	dir := mountLocalVia(t, remoteDir, func(inner Remote) Remote { r.Remote = inner; return r })
	want := bytes.Repeat([]byte("0123456789abcdef"), 8<<16) // 8 MiB
	f, err := os.Create(filepath.Join(dir, "big"))
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(want); off += 1 << 20 {
		if _, err := f.Write(want[off : off+1<<20]); err != nil {
			t.Fatal(err)
		}
	}
	back := make([]byte, 1<<20)
	if _, err := f.ReadAt(back, 3<<20); err != nil || !bytes.Equal(back, want[3<<20:4<<20]) {
		t.Fatalf("a read on the writing descriptor: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(remoteDir, "big")); !bytes.Equal(got, want) {
		t.Fatalf("the pod has %d bytes, not the %d written", len(got), len(want))
	}
	if r.most.Load() < 2 {
		t.Errorf("writes went one at a time (at most %d at once)", r.most.Load())
	}

	bad, err := os.Create(filepath.Join(dir, "bad"))
	if err != nil {
		t.Fatal(err)
	}
	var werr error
	for i := 0; i < 4 && werr == nil; i++ {
		_, werr = bad.Write([]byte("data that finds no room\n"))
	}
	cerr := bad.Close()
	if !errors.Is(werr, syscall.ENOSPC) && !errors.Is(cerr, syscall.ENOSPC) {
		t.Errorf("a refused write reached neither write (%v) nor close (%v)", werr, cerr)
	}
}

// Overlapping writes reach the pod in the order they were made.
func TestOverlappingWritesKeepTheirOrder(t *testing.T) {
	remoteDir := t.TempDir()
	r := &behindRemote{}
	dir := mountLocalVia(t, remoteDir, func(inner Remote) Remote { r.Remote = inner; return r })
	writeOverlapping(t, dir, remoteDir, "f", 0)
}

// writeOverlapping writes skip bytes to name through the mount, then 26
// overlapping 4 KiB writes at offset 0 ('a' to 'z'), closes, and checks the
// pod kept the last.
func writeOverlapping(t *testing.T, dir, remoteDir, name string, skip int) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, skip)); err != nil {
		t.Fatal(err)
	}
	for i := byte('a'); i <= 'z'; i++ {
		if _, err := f.WriteAt(bytes.Repeat([]byte{i}, 4096), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(remoteDir, name)); len(got) != max(skip, 4096) || !bytes.Equal(got[:4096], bytes.Repeat([]byte{'z'}, 4096)) {
		t.Errorf("the last write is not the one the pod kept: %q...", got[:min(8, len(got))])
	}
}

// A big write's buffer is kept for later writes only once its sender is
// done with it: many writes through few buffers, each checked by its
// sender after a while (as a stream sends it), arrive as written; a failed
// write's buffer comes back too, once its sender returned.
func TestWriteBuffersReusedOnlyWhenSent(t *testing.T) {
	var p pending
	var bad atomic.Int32
	check := func(data []byte, off int64, done func(error)) {
		time.Sleep(5 * time.Millisecond) // longer than the writer takes to come round the buffers
		for _, b := range data {
			if b != byte(off/bigWrite) {
				bad.Add(1)
				break
			}
		}
		done(nil)
	}
	data := make([]byte, bigWrite)
	if b, kept := copyWrite(data); kept { // the buffers made
		recycleWrite(b)
	}
	free := len(writeBufs.free) // all of them
	refilled := func(what string) {
		t.Helper()
		for deadline := time.Now().Add(2 * time.Second); len(writeBufs.free) != free; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d kept buffers free after %s, want %d", len(writeBufs.free), what, free)
			}
		}
	}
	for i := range 4 * maxBehind / bigWrite {
		for j := range data {
			data[j] = byte(i)
		}
		if err := p.write(check, data, int64(i)*bigWrite); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.settle(); err != nil {
		t.Fatal(err)
	}
	if n := bad.Load(); n != 0 {
		t.Fatalf("%d writes reached their sender changed", n)
	}
	refilled("the writes")
	// A broken stream answers a frame while its sender may still send it:
	// the buffer waits for both.
	sent := make(chan struct{})
	fail := func(data []byte, off int64, done func(error)) {
		done(errors.New("write stream: the file server hung up"))
		<-sent
	}
	if err := p.write(fail, data, 0); err != nil {
		t.Fatal(err)
	}
	if err := p.settle(); err == nil {
		t.Fatal("the failed write's error did not reach the writer")
	}
	time.Sleep(10 * time.Millisecond)
	if n := len(writeBufs.free); n != free-1 {
		t.Fatalf("%d kept buffers free while a failed write's sender still runs, want %d", n, free-1)
	}
	close(sent)
	refilled("a failed write")
}
