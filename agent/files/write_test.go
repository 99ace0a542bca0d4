package files

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/kubectl-cz/kubectl-cz/agent/wire"
)

// writeSession opens a write stream of path on a pipe to ServeWrite and
// returns the laptop's end, the open's answer, and where ServeWrite's
// error comes.
func writeSession(t *testing.T, path string) (net.Conn, *bufio.Reader, wire.WriteAck, chan error) {
	t.Helper()
	laptop, pod := net.Pipe()
	t.Cleanup(func() { laptop.Close() })
	served := make(chan error, 1)
	go func() {
		defer pod.Close()
		_, err := ServeWrite(bufio.NewReader(pod), pod)
		served <- err
	}()
	req := wire.WriteRequest{Path: path}
	if fi, err := os.Stat(path); err == nil { // as the laptop's own open sees it
		req.Size, req.Mtime = fi.Size(), fi.ModTime().Unix()
	}
	line, _ := json.Marshal(req)
	go laptop.Write(append(line, '\n'))
	r := bufio.NewReader(laptop)
	return laptop, r, readAck(t, r), served
}

func readAck(t *testing.T, r *bufio.Reader) wire.WriteAck {
	t.Helper()
	line, err := r.ReadBytes('\n')
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	var a wire.WriteAck
	if err := json.Unmarshal(line, &a); err != nil {
		t.Fatal(err)
	}
	return a
}

func sendFrame(t *testing.T, c net.Conn, off int64, data []byte, enc byte) {
	t.Helper()
	payload := data
	if enc == wire.WriteZstd {
		e, _ := zstd.NewWriter(nil)
		payload = e.EncodeAll(data, nil)
	}
	hdr := wire.WriteFrame{Offset: off, Length: uint32(len(data)), WireLength: uint32(len(payload)), Encoding: enc}.Marshal()
	go c.Write(append(hdr[:], payload...))
}

// Frames, raw and compressed, land at their offsets in the existing file,
// each answered once written; later frames overwrite earlier ones.
func TestServeWriteFrames(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("0123456789"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, r, a, served := writeSession(t, p)
	if a.Error != "" {
		t.Fatalf("open: %s", a.Error)
	}
	random := make([]byte, 300<<10)
	rand.Read(random)
	text := bytes.Repeat([]byte("a line of source code;\n"), 50000) // 1.1 MiB
	sendFrame(t, c, 4, []byte("abc"), wire.WriteRaw)
	if a := readAck(t, r); a.Error != "" {
		t.Fatal(a.Error)
	}
	sendFrame(t, c, 20, random, wire.WriteRaw)
	if a := readAck(t, r); a.Error != "" {
		t.Fatal(a.Error)
	}
	sendFrame(t, c, 20+int64(len(random)), text, wire.WriteZstd)
	if a := readAck(t, r); a.Error != "" {
		t.Fatal(a.Error)
	}
	sendFrame(t, c, 5, []byte("X"), wire.WriteZstd)
	if a := readAck(t, r); a.Error != "" {
		t.Fatal(a.Error)
	}
	c.Close()
	if err := <-served; err != nil {
		t.Fatalf("the laptop's close: %v", err)
	}
	got, _ := os.ReadFile(p)
	want := append(append(append([]byte("0123aXc789"), make([]byte, 10)...), random...), text...)
	if !bytes.Equal(got, want) {
		t.Fatalf("the file is %d bytes, not what was written (%d)", len(got), len(want))
	}
}

// The stream neither creates a file nor writes to what is not a regular
// file; a bad header or a frame that decodes to another length ends it,
// and what it wrote before stays.
func TestServeWriteRefuses(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(dir, "missing"), fifo, dir, "relative/path"} {
		_, _, a, _ := writeSession(t, p)
		if a.Error == "" {
			t.Errorf("a write stream of %s was opened", p)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "missing")); err == nil {
		t.Error("the write stream created a file")
	}

	// Another file at the path than the laptop's open sees (renamed or
	// replaced in the pod since): refused, untouched.
	replaced := filepath.Join(dir, "replaced")
	os.WriteFile(replaced, []byte("the pod's own"), 0o644)
	laptop, pod := net.Pipe()
	go func() {
		defer pod.Close()
		ServeWrite(bufio.NewReader(pod), pod)
	}()
	line, _ := json.Marshal(wire.WriteRequest{Path: replaced, Size: 1 << 20, Mtime: time.Now().Unix()})
	go laptop.Write(append(line, '\n'))
	if a := readAck(t, bufio.NewReader(laptop)); !strings.Contains(a.Error, "not the file the laptop opened") {
		t.Errorf("a write stream of another file than the laptop's: %q", a.Error)
	}
	laptop.Close()
	if got, _ := os.ReadFile(replaced); string(got) != "the pod's own" {
		t.Errorf("the replaced file is %q", got)
	}

	p := filepath.Join(dir, "f")
	os.WriteFile(p, []byte("keep"), 0o644)
	c, _, _, served := writeSession(t, p)
	// Declared 10 bytes, decodes to 1 MiB (a bomb, or a confused laptop).
	e, _ := zstd.NewWriter(nil)
	payload := e.EncodeAll(make([]byte, 1<<20), nil)
	hdr := wire.WriteFrame{Length: 10, WireLength: uint32(len(payload)), Encoding: wire.WriteZstd}.Marshal()
	go c.Write(append(hdr[:], payload...))
	if err := <-served; err == nil || !strings.Contains(err.Error(), "decoded to") {
		t.Errorf("a frame that decodes to another length: %v", err)
	}
	c, _, _, served = writeSession(t, p)
	hdr = wire.WriteFrame{Offset: -5, Length: 1, WireLength: 1}.Marshal()
	go c.Write(append(hdr[:], 'x'))
	if err := <-served; err == nil {
		t.Error("a frame at a negative offset was taken")
	}
	if got, _ := os.ReadFile(p); string(got) != "keep" {
		t.Errorf("the file is %q after refused frames", got)
	}
}
