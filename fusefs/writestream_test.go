package fusefs

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/kubectl-cz/kubectl-cz/agent/files"
	"github.com/kubectl-cz/kubectl-cz/agent/wire"
)

// streamed is a remote whose file server takes write streams (by default
// the agent's own ServeWrite, over a pipe), counting the streams opened and
// the writes that still went by SFTP.
type streamed struct {
	Remote
	streams, sftpWrites *atomic.Int64 // bytes written by SFTP
	// serve, if set, is the file server's end instead of ServeWrite's.
	serve func(r *bufio.Reader, w io.Writer) (int64, error)
	// unsupported: the file server hangs up (an older one).
	unsupported bool
}

func (s streamed) OpenWrites(ctx context.Context, req wire.WriteRequest) (io.ReadWriteCloser, error) {
	s.streams.Add(1)
	if s.unsupported {
		return nil, wire.ErrWriteUnsupported
	}
	serve := s.serve
	if serve == nil {
		serve = files.ServeWrite
	}
	laptop, pod := net.Pipe()
	go func() {
		defer pod.Close()
		_, _ = serve(bufio.NewReader(pod), pod)
	}()
	line, _ := json.Marshal(req)
	if _, err := laptop.Write(append(line, '\n')); err != nil {
		return nil, err
	}
	r := bufio.NewReader(laptop)
	answer, err := r.ReadBytes('\n')
	if err != nil {
		laptop.Close()
		return nil, err
	}
	var a wire.WriteAck
	if err := json.Unmarshal(answer, &a); err != nil || a.Error != "" {
		laptop.Close()
		return nil, errors.New("write stream refused: " + a.Error)
	}
	return struct {
		io.Reader
		io.Writer
		io.Closer
	}{r, laptop, laptop}, nil
}

func (s streamed) OpenFile(p string, flags int) (File, error) {
	f, err := s.Remote.OpenFile(p, flags)
	if err != nil {
		return nil, err
	}
	return sftpWriteCounter{f, s.sftpWrites}, nil
}

type sftpWriteCounter struct {
	File
	writes *atomic.Int64
}

// Stat is the handle's fstat, which a write stream's request carries.
func (f sftpWriteCounter) Stat() (os.FileInfo, error) {
	return f.File.(interface{ Stat() (os.FileInfo, error) }).Stat()
}

func (f sftpWriteCounter) WriteAt(b []byte, off int64) (int, error) {
	f.writes.Add(int64(len(b)))
	return f.File.WriteAt(b, off)
}

// writeFile writes data through the mount in 1 MiB writes, fsyncs and
// closes, and returns the first error.
func writeFile(p string, data []byte) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	for off := 0; off < len(data); off += 1 << 20 {
		if _, err := f.Write(data[off:min(off+1<<20, len(data))]); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Writes past a file's first MiB go on one stream per open file,
// compressible ones compressed and random ones as they are, and land in the
// pod byte for byte, overlapping ones in the order they were made; a small
// file's go by SFTP (a stream costs more to open).
func TestWriteStreamCarriesWrites(t *testing.T) {
	remoteDir := t.TempDir()
	var streams, sftpWrites atomic.Int64
	dir := mountLocalVia(t, remoteDir, func(r Remote) Remote { return streamed{Remote: r, streams: &streams, sftpWrites: &sftpWrites} })
	random := make([]byte, 3<<20+12345)
	rand.Read(random)
	text := bytes.Repeat([]byte("func main() { fmt.Println(\"a line of source\") }\n"), 200000) // 9.6 MiB
	for name, data := range map[string][]byte{"random": random, "text": text} {
		if err := writeFile(filepath.Join(dir, name), data); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got, _ := os.ReadFile(filepath.Join(remoteDir, name)); !bytes.Equal(got, data) {
			t.Fatalf("%s: the pod has %d bytes, not the %d written", name, len(got), len(data))
		}
	}
	if n := sftpWrites.Load(); n > 2<<20 {
		t.Errorf("%d bytes of 2 files' writes went by SFTP, want at most their first MiB", n)
	}
	if n := streams.Load(); n != 2 {
		t.Errorf("%d write streams for 2 files written", n)
	}
	// Over the first MiB, overlapping writes, by SFTP and the stream.
	writeOverlapping(t, dir, remoteDir, "overlapping", 1<<20)
	before := sftpWrites.Load()
	if err := writeFile(filepath.Join(dir, "small"), []byte("small\n")); err != nil {
		t.Fatal(err)
	}
	if n := streams.Load(); n != 3 || sftpWrites.Load() == before {
		t.Errorf("a small file: %d write streams in all (want 3), its write by SFTP: %v", n, sftpWrites.Load() > before)
	}
}

// What the pod refuses, and a stream that breaks, reach the writer (at
// fsync or close), as SFTP's errors do.
func TestWriteStreamFailuresReachTheWriter(t *testing.T) {
	refusing := func(r *bufio.Reader, w io.Writer) (int64, error) {
		r.ReadBytes('\n')
		io.WriteString(w, "{}\n") // opened
		for {
			var hdr [wire.WriteFrameSize]byte
			if _, err := io.ReadFull(r, hdr[:]); err != nil {
				return 0, err
			}
			f, err := wire.ParseWriteFrame(hdr)
			if err != nil {
				return 0, err
			}
			if _, err := io.CopyN(io.Discard, r, int64(f.WireLength)); err != nil {
				return 0, err
			}
			io.WriteString(w, `{"error":"write /data/f: no space left on device"}`+"\n")
		}
	}
	hangingUp := func(r *bufio.Reader, w io.Writer) (int64, error) {
		r.ReadBytes('\n')
		io.WriteString(w, "{}\n")
		var hdr [wire.WriteFrameSize]byte
		_, err := io.ReadFull(r, hdr[:])
		return 0, err // and the pipe closes
	}
	for name, serve := range map[string]func(*bufio.Reader, io.Writer) (int64, error){"refusing": refusing, "hanging up": hangingUp} {
		remoteDir := t.TempDir()
		var streams, sftpWrites atomic.Int64
		dir := mountLocalVia(t, remoteDir, func(r Remote) Remote {
			return streamed{Remote: r, streams: &streams, sftpWrites: &sftpWrites, serve: serve}
		})
		err := writeFile(filepath.Join(dir, "f"), bytes.Repeat([]byte("x"), 3<<20))
		if err == nil {
			t.Errorf("%s: the writer was told nothing", name)
		} else if name == "refusing" && !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("%s: %v, want ENOSPC", name, err)
		}
	}
}

// A file server without write streams gets the writes by SFTP, and is
// not asked again for each file.
func TestWriteStreamUnsupportedGoesBySFTP(t *testing.T) {
	remoteDir := t.TempDir()
	var streams, sftpWrites atomic.Int64
	dir := mountLocalVia(t, remoteDir, func(r Remote) Remote {
		return streamed{Remote: r, streams: &streams, sftpWrites: &sftpWrites, unsupported: true}
	})
	for _, name := range []string{"a", "b"} {
		data := bytes.Repeat([]byte(name), 2<<20)
		if err := writeFile(filepath.Join(dir, name), data); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(filepath.Join(remoteDir, name)); !bytes.Equal(got, data) {
			t.Fatalf("%s: the pod has %d bytes, not the %d written", name, len(got), len(data))
		}
	}
	if streams.Load() != 1 || sftpWrites.Load() != 4<<20 {
		t.Errorf("%d write streams asked for, %d SFTP writes; want 1, and the writes by SFTP", streams.Load(), sftpWrites.Load())
	}
}

// A write is compressed where that saves an eighth: text is, random bytes
// are not, and both come back whole.
func TestEncodeWrite(t *testing.T) {
	random := make([]byte, 1<<20)
	rand.Read(random)
	text := bytes.Repeat([]byte("a line of source code\n"), 50000)
	mixed := append(append([]byte(nil), random[:512<<10]...), text[:512<<10]...) // the sample is random
	for name, c := range map[string]struct {
		data []byte
		enc  byte
	}{"random": {random, wire.WriteRaw}, "text": {text, wire.WriteZstd}, "tiny": {[]byte("x"), wire.WriteRaw}, "mixed": {mixed, wire.WriteRaw}} {
		out, enc := encodeWrite(c.data)
		if enc != c.enc {
			t.Errorf("%s: encoding %d, want %d", name, enc, c.enc)
		}
		if enc == wire.WriteZstd {
			if len(out) > len(c.data)/8 {
				t.Errorf("%s: %d bytes compressed to %d", name, len(c.data), len(out))
			}
			if back, err := zstdDecoder().DecodeAll(out, nil); err != nil || !bytes.Equal(back, c.data) {
				t.Errorf("%s: does not decode back: %v", name, err)
			}
		}
	}
}

func zstdDecoder() *zstd.Decoder {
	d, _ := zstd.NewReader(nil)
	return d
}

// Once a handle's stream broke, its writes go by SFTP: the frames lost are
// the writer's error once, what it writes next reaches the pod.
func TestWriteStreamBrokenGoesBySFTP(t *testing.T) {
	remoteDir := t.TempDir()
	var streams, sftpWrites atomic.Int64
	hangingUp := func(r *bufio.Reader, w io.Writer) (int64, error) {
		r.ReadBytes('\n')
		io.WriteString(w, "{}\n")
		var hdr [wire.WriteFrameSize]byte
		_, err := io.ReadFull(r, hdr[:])
		return 0, err
	}
	dir := mountLocalVia(t, remoteDir, func(r Remote) Remote {
		return streamed{Remote: r, streams: &streams, sftpWrites: &sftpWrites, serve: hangingUp}
	})
	f, err := os.Create(filepath.Join(dir, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := bytes.Repeat([]byte("y"), 1<<20)
	f.Write(chunk)
	f.Write(chunk) // on the stream, which hangs up
	if err := f.Sync(); err == nil {
		t.Fatal("the lost frame's error did not reach fsync")
	}
	later := bytes.Repeat([]byte("z"), 1<<20)
	if _, err := f.WriteAt(later, 3<<20); err != nil {
		t.Fatalf("a write after the stream broke: %v", err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync after the stream broke: %v", err)
	}
	got, _ := os.ReadFile(filepath.Join(remoteDir, "f"))
	if len(got) != 4<<20 || !bytes.Equal(got[3<<20:], later) {
		t.Errorf("the pod has %d bytes, not the write made after the stream broke", len(got))
	}
	if streams.Load() != 1 {
		t.Errorf("%d streams opened, want 1 (none again for the same handle)", streams.Load())
	}
}

// A file replaced in the pod while a program writes it (renamed over, as
// log rotation or an atomic save there does) is not written through its
// path: the write stream is refused, and the rest of the writes go by SFTP
// to the file the program opened.
func TestWriteStreamRefusedForAReplacedFile(t *testing.T) {
	remoteDir := t.TempDir()
	var streams, sftpWrites atomic.Int64
	dir := mountLocalVia(t, remoteDir, func(r Remote) Remote { return streamed{Remote: r, streams: &streams, sftpWrites: &sftpWrites} })
	f, err := os.Create(filepath.Join(dir, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(bytes.Repeat([]byte("a"), 1<<20)); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	// The pod puts another file in its place.
	tmp := filepath.Join(remoteDir, "f.new")
	if err := os.WriteFile(tmp, []byte("the pod's own\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(remoteDir, "f")); err != nil {
		t.Fatal(err)
	}
	before := sftpWrites.Load()
	if _, err := f.Write(bytes.Repeat([]byte("b"), 2<<20)); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(remoteDir, "f")); string(got) != "the pod's own\n" {
		t.Errorf("the file the pod put in place was written through its path: %d bytes", len(got))
	}
	if streams.Load() != 1 || sftpWrites.Load()-before != 2<<20 {
		t.Errorf("%d write streams asked for, %d bytes then by SFTP; want 1 refused, 2 MiB by SFTP", streams.Load(), sftpWrites.Load()-before)
	}
}
