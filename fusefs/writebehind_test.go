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
