package localnet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubectl-cz/kubectl-cz/session"
)

func TestResolvConf(t *testing.T) {
	orig := "# comment\nnameserver 10.0.0.2\nnameserver 127.0.21.53\nsearch corp.example\noptions edns0\n"
	out, ups := ResolvConf([]byte(orig), "127.0.21.53", []string{"shop.svc.cluster.local", "svc.cluster.local"})
	want := "# Written by kubectl cz teleport; the original comes back when its session closes.\n" +
		"nameserver 127.0.21.53\nsearch shop.svc.cluster.local svc.cluster.local corp.example\noptions edns0\n"
	if string(out) != want {
		t.Errorf("got:\n%s\nwant:\n%s", out, want)
	}
	// The shim's own address (a teleport that crashed) is not an upstream.
	if len(ups) != 1 || ups[0] != "10.0.0.2:53" {
		t.Errorf("upstreams %v", ups)
	}
}

// undo restores a file only while it holds what teleport wrote; a file
// teleport created is removed; someone else's change is a conflict.
func TestUndoFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	undo := func(d fileData, force bool) error {
		raw, _ := json.Marshal(d)
		return undoFile(context.Background(), &session.UndoContext{Force: force, Log: io.Discard}, session.Entry{Data: raw})
	}
	os.WriteFile(p, []byte("ours"), 0o644)
	if err := undo(fileData{Path: p, Original: []byte("orig"), WrittenSHA256: sha([]byte("ours")), Mode: 0o644}, false); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "orig" {
		t.Fatalf("restored %q", b)
	}
	os.WriteFile(p, []byte("someone else's"), 0o644)
	if err := undo(fileData{Path: p, Original: []byte("orig"), WrittenSHA256: sha([]byte("ours"))}, false); !errors.Is(err, session.ErrConflict) {
		t.Fatalf("a changed file: %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "someone else's" {
		t.Fatal("a conflict overwrote the file")
	}
	if err := undo(fileData{Path: p, Original: []byte("orig"), WrittenSHA256: sha([]byte("ours")), Mode: 0o644}, true); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "orig" {
		t.Fatal("--force did not restore")
	}
	os.WriteFile(p, []byte("env"), 0o600)
	if err := undo(fileData{Path: p, Absent: true, WrittenSHA256: sha([]byte("env"))}, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatal("a file teleport created is still there")
	}
	if err := undo(fileData{Path: p, Absent: true, WrittenSHA256: sha([]byte("env"))}, false); err != nil {
		t.Fatalf("undo twice: %v", err)
	}
}

func TestHostsBlock(t *testing.T) {
	orig := []byte("127.0.0.1 localhost")
	b := HostsBlock(orig, "abc", []string{"10.96.0.20\tcore core.shop"})
	if !bytes.HasPrefix(b, []byte("127.0.0.1 localhost\n# kubectl cz teleport abc: begin")) || !strings.Contains(string(b), "10.96.0.20\tcore core.shop\n# kubectl cz teleport abc: end\n") {
		t.Errorf("%q", b)
	}
}
