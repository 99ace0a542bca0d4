package files

import (
	"archive/tar"
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/kubectl-cz/kubectl-cz/agent/wire"
)

func serveTree(t *testing.T, req wire.TreeRequest) ([]*tar.Header, map[string][]byte) {
	t.Helper()
	line, _ := json.Marshal(req)
	var out bytes.Buffer
	if err := ServeTree(bufio.NewReader(bytes.NewReader(append(line, '\n'))), &out); err != nil {
		t.Fatal(err)
	}
	var stream io.Reader = &out
	if req.Encoding == wire.TreeZstd {
		if !bytes.HasPrefix(out.Bytes(), []byte{0x28, 0xb5, 0x2f, 0xfd}) {
			t.Fatal("a zstd tree stream without zstd's magic number")
		}
		d, err := zstd.NewReader(&out)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		stream = d
	}
	tr := tar.NewReader(stream)
	var hdrs []*tar.Header
	content := map[string][]byte{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return hdrs, content
		}
		if err != nil {
			t.Fatal(err)
		}
		hdrs = append(hdrs, h)
		if h.PAXRecords[wire.TreeContent] != "" {
			content[h.Name], _ = io.ReadAll(tr)
		}
	}
}

// Listings come first, breadth first, with every entry's attributes as
// SFTP gives them; then small files' content in a depth-first walk's
// order while the budget lasts; big files never.
func TestServeTreeListsThenContent(t *testing.T) {
	root := t.TempDir()
	for _, p := range []string{"b/x/1", "b/2", "a/3", "c"} {
		os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(root, p), []byte("content of "+p), 0o640)
	}
	os.WriteFile(filepath.Join(root, "big"), make([]byte, 100), 0o600)
	os.Symlink("c", filepath.Join(root, "link"))
	when := time.Date(2026, 1, 2, 3, 4, 5, 678, time.UTC)
	os.Chtimes(filepath.Join(root, "c"), when, when)

	hdrs, content := serveTree(t, wire.TreeRequest{Root: root, Folders: 10, Budget: 1 << 20, SmallFile: 50})
	var lists, order []string
	seenContent := false
	for _, h := range hdrs {
		switch {
		case h.PAXRecords[wire.TreeList] != "":
			if seenContent {
				t.Errorf("listing of %s after content", h.Name)
			}
			lists = append(lists, strings.TrimPrefix(h.Name, root))
		case h.PAXRecords[wire.TreeContent] != "":
			seenContent = true
			order = append(order, strings.TrimPrefix(h.Name, root))
		}
		if h.Name == filepath.Join(root, "c") && h.PAXRecords[wire.TreeContent] == "" {
			if !h.ModTime.Equal(when.Truncate(time.Second)) || h.PAXRecords[wire.TreeSize] != "12" || h.PAXRecords[wire.TreeMode] != "100640" {
				t.Errorf("c listed as %v size %s mode %s", h.ModTime, h.PAXRecords[wire.TreeSize], h.PAXRecords[wire.TreeMode])
			}
		}
		if h.Name == filepath.Join(root, "link") && h.Linkname != "c" {
			t.Errorf("link points to %q", h.Linkname)
		}
	}
	if got := strings.Join(lists, " "); got != " /a /b /b/x" {
		t.Errorf("listings %q, want breadth first", got)
	}
	if got := strings.Join(order, " "); got != "/a/3 /b/2 /b/x/1 /c" {
		t.Errorf("content order %q, want a depth-first walk's", got)
	}
	if string(content[filepath.Join(root, "b/x/1")]) != "content of b/x/1" {
		t.Errorf("b/x/1: %q", content[filepath.Join(root, "b/x/1")])
	}
	if _, ok := content[filepath.Join(root, "big")]; ok {
		t.Error("a file bigger than SmallFile was sent")
	}

	// A budget of 30 bytes: the first two small files (12 + 15 bytes).
	_, content = serveTree(t, wire.TreeRequest{Root: root, Folders: 10, Budget: 30, SmallFile: 50})
	if len(content) != 2 {
		t.Errorf("%d files within a 30-byte budget, want 2", len(content))
	}
	// One folder: the root's listing only, and no content without a budget.
	hdrs, content = serveTree(t, wire.TreeRequest{Root: root, Folders: 1, SmallFile: 50})
	for _, h := range hdrs {
		if h.PAXRecords[wire.TreeList] != "" && h.Name != root {
			t.Errorf("%s listed beyond the one folder asked for", h.Name)
		}
	}
	if len(content) != 0 {
		t.Errorf("content sent without a budget")
	}
}

// Requests out of bounds, not clean, or too long are refused.
func TestServeTreeRefusesBadRequests(t *testing.T) {
	for _, line := range []string{
		`{"root":"relative","folders":1}`,
		`{"root":"/a/../etc","folders":1}`,
		`{"root":"/","folders":0}`,
		`{"root":"/","folders":100000}`,
		`{"root":"/","folders":1,"budget":-1}`,
		`{"root":"/","folders":1,"smallFile":1073741824}`,
		`{"root":"/","folders":1,"contentOnly":true}`,
		`{"root":"/","folders":1,"encoding":"gzip"}`,
		`{"root":"/` + strings.Repeat("a", 8<<10) + `","folders":1}`,
		`not json`,
	} {
		var out bytes.Buffer
		if err := ServeTree(bufio.NewReader(strings.NewReader(line+"\n")), &out); err == nil || out.Len() != 0 {
			t.Errorf("%.40s: accepted (%v, %d bytes)", line, err, out.Len())
		}
	}
}

// Compressed, or content only, the stream says the same: zstd decodes to
// the plain stream, and content only is that stream without the listings.
func TestServeTreeCompressedAndContentOnly(t *testing.T) {
	root := t.TempDir()
	for _, p := range []string{"b/x/1", "b/2", "a/3", "c"} {
		os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(root, p), []byte("content of "+p), 0o640)
	}
	req := wire.TreeRequest{Root: root, Folders: 10, Budget: 1 << 20, SmallFile: 50}
	plainHdrs, plain := serveTree(t, req)
	req.Encoding = wire.TreeZstd
	zHdrs, zContent := serveTree(t, req)
	if len(zHdrs) != len(plainHdrs) || len(zContent) != len(plain) {
		t.Fatalf("zstd: %d headers, %d files; plain: %d, %d", len(zHdrs), len(zContent), len(plainHdrs), len(plain))
	}
	req.ContentOnly = true
	hdrs, content := serveTree(t, req)
	for _, h := range hdrs {
		if h.PAXRecords[wire.TreeContent] == "" {
			t.Errorf("content only, yet %s was listed", h.Name)
		}
	}
	if len(hdrs) != 4 || len(content) != len(plain) {
		t.Fatalf("content only: %d headers, %d files, want 4 and %d", len(hdrs), len(content), len(plain))
	}
	for p, b := range plain {
		if !bytes.Equal(content[p], b) || !bytes.Equal(zContent[p], b) {
			t.Errorf("%s: %q compressed, %q content only, want %q", p, zContent[p], content[p], b)
		}
	}
}

// writes counts the writes a stream makes to its connection, and when.
type writes struct {
	n     int
	first time.Time
}

func (w *writes) Write(p []byte) (int, error) {
	if w.n == 0 {
		w.first = time.Now()
	}
	w.n++
	return len(p), nil
}

// A compressed tree stream goes out as it is made, not at its end: the
// laptop lists folders and serves files while the walk goes on (the buffer
// and zstd held a small tree's whole stream, and a cp -r waited for it).
func TestServeTreeSendsAsItGoes(t *testing.T) {
	root := t.TempDir()
	for d := 0; d < 600; d++ {
		dir := filepath.Join(root, fmt.Sprintf("d%03d", d))
		os.Mkdir(dir, 0o755)
		for f := 0; f < 4; f++ {
			os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d", f)), []byte("content of a small file\n"), 0o644)
		}
	}
	line, _ := json.Marshal(wire.TreeRequest{Root: root, Folders: 1024, Budget: 64 << 20, SmallFile: 64 << 10, Encoding: wire.TreeZstd})
	w := &writes{}
	start := time.Now()
	if err := ServeTree(bufio.NewReader(bytes.NewReader(append(line, '\n'))), w); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if took < 4*treeFlushEvery {
		t.Skipf("the stream took %v: too fast to tell", took)
	}
	if w.n < 3 || w.first.Sub(start) > took/2 {
		t.Errorf("%d writes, the first after %v of %v: want the stream sent as it goes", w.n, w.first.Sub(start), took)
	}
}
