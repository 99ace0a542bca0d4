package files

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/kubectl-cz/kubectl-cz/agent/wire"
)

// askRead sends one read request line over a TCP pair (so the answer goes
// through sendfile, as in the pod) and returns the answer and the bytes.
func askRead(t *testing.T, line string) (wire.ReadAnswer, []byte) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = ServeRead(bufio.NewReader(c), c)
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	first, err := br.ReadBytes('\n')
	if err != nil {
		t.Fatalf("no answer line: %v", err)
	}
	var a wire.ReadAnswer
	if err := json.Unmarshal(first, &a); err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	return a, body
}

func request(t *testing.T, r wire.ReadRequest) string {
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A range comes whole, one past the file's end comes short; a file that is
// not there, a folder, a FIFO and a request outside the bounds get an
// error answer and no bytes.
func TestServeRead(t *testing.T) {
	dir := t.TempDir()
	data := bytes.Repeat([]byte("0123456789"), 300_000)
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	a, body := askRead(t, request(t, wire.ReadRequest{Path: p, Offset: 12345, Length: 1 << 20}))
	if a.Error != "" || a.Size != int64(len(data)) || !bytes.Equal(body, data[12345:12345+1<<20]) {
		t.Fatalf("a range: %+v, %d bytes", a, len(body))
	}
	a, body = askRead(t, request(t, wire.ReadRequest{Path: p, Offset: int64(len(data)) - 10, Length: 1 << 20}))
	if a.Error != "" || !bytes.Equal(body, data[len(data)-10:]) {
		t.Fatalf("the end of the file: %+v, %q", a, body)
	}

	fifo := filepath.Join(dir, "fifo")
	if err := mkfifo(fifo); err != nil {
		t.Fatal(err)
	}
	for name, line := range map[string]string{
		"missing":        request(t, wire.ReadRequest{Path: filepath.Join(dir, "nope"), Length: 10}),
		"a folder":       request(t, wire.ReadRequest{Path: dir, Length: 10}),
		"a FIFO":         request(t, wire.ReadRequest{Path: fifo, Length: 10}),
		"relative path":  request(t, wire.ReadRequest{Path: "f", Length: 10}),
		"unclean path":   request(t, wire.ReadRequest{Path: dir + "/../" + filepath.Base(dir) + "/f", Length: 10}),
		"too long":       request(t, wire.ReadRequest{Path: p, Length: wire.MaxReadLength + 1}),
		"negative start": request(t, wire.ReadRequest{Path: p, Offset: -1, Length: 10}),
	} {
		a, body := askRead(t, line)
		if a.Error == "" || len(body) != 0 {
			t.Errorf("%s: answer %+v and %d bytes, want an error and none", name, a, len(body))
		}
	}
	if a, _ := askRead(t, request(t, wire.ReadRequest{Path: fifo, Length: 10})); !strings.Contains(a.Error, "not a regular file") {
		t.Errorf("a FIFO: %q", a.Error)
	}
}

// Asked for zstd, a range that compresses comes as one zstd stream of
// exactly its bytes (cut at the file's end); one that does not (random
// bytes) comes as it is, as does any range not asked for zstd.
func TestServeReadCompressesWhereItPays(t *testing.T) {
	dir := t.TempDir()
	text := []byte(strings.Repeat("2026-12-05T12:00:00Z GET /api/v1/pods 200 1.2ms\n", 60_000))
	random := make([]byte, 1<<20)
	if _, err := rand.Read(random); err != nil {
		t.Fatal(err)
	}
	pt, pr := filepath.Join(dir, "log"), filepath.Join(dir, "random")
	if err := os.WriteFile(pt, text, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pr, random, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name     string
		req      wire.ReadRequest
		want     []byte
		encoding string
	}{
		{"text, zstd asked", wire.ReadRequest{Path: pt, Offset: 1000, Length: 1 << 20, Zstd: true}, text[1000 : 1000+1<<20], wire.ReadZstd},
		{"text past its end", wire.ReadRequest{Path: pt, Offset: int64(len(text)) - 70_000, Length: 1 << 20, Zstd: true}, text[len(text)-70_000:], wire.ReadZstd},
		{"text, zstd not asked", wire.ReadRequest{Path: pt, Offset: 0, Length: 1 << 20}, text[:1<<20], ""},
		{"random, zstd asked", wire.ReadRequest{Path: pr, Offset: 0, Length: 1 << 20, Zstd: true}, random, ""},
	} {
		a, body := askRead(t, request(t, c.req))
		if a.Error != "" || a.Encoding != c.encoding {
			t.Fatalf("%s: answer %+v, want encoding %q", c.name, a, c.encoding)
		}
		if a.Encoding == wire.ReadZstd {
			if len(body) > len(c.want)/4 {
				t.Errorf("%s: %d bytes on the wire for %d", c.name, len(body), len(c.want))
			}
			dec, err := zstd.NewReader(bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			body, err = io.ReadAll(dec)
			dec.Close()
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
		}
		if !bytes.Equal(body, c.want) {
			t.Errorf("%s: %d bytes differ from the file's %d", c.name, len(body), len(c.want))
		}
	}
}
