package localnet

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
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

// An env file holds Secret values: under sudo it belongs to the user behind
// sudo and is 0600, also when a 0644 file of root's was there; closing the
// session gives back that file, its mode and its owner.
func TestWriteFileUnderSudo(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to hand a file to another user")
	}
	t.Setenv("SUDO_UID", "4242")
	t.Setenv("SUDO_GID", "4343")
	dir := t.TempDir()
	p := filepath.Join(dir, "core.env")
	if err := os.WriteFile(p, []byte("MINE=1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := session.Open(session.Config{StateDir: filepath.Join(dir, "state")})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := WriteFile(ctx, s, p, []byte("SECRET=hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(p)
	sys := st.Sys().(*syscall.Stat_t)
	if st.Mode().Perm() != 0o600 || sys.Uid != 4242 || sys.Gid != 4343 {
		t.Fatalf("env file mode %o owner %d:%d, want 600 4242:4343", st.Mode().Perm(), sys.Uid, sys.Gid)
	}
	journal, _ := os.ReadFile(filepath.Join(dir, "state", "sessions", s.ID()+".jsonl"))
	if bytes.Contains(journal, []byte("hunter2")) || bytes.Contains(journal, []byte(base64.StdEncoding.EncodeToString([]byte("SECRET=hunter2\n")))) {
		t.Fatal("the local journal holds the Secret value written")
	}
	if _, err := s.Close(ctx, session.CloseOptions{}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	st, _ = os.Stat(p)
	sys = st.Sys().(*syscall.Stat_t)
	if string(b) != "MINE=1\n" || st.Mode().Perm() != 0o644 || sys.Uid != 0 {
		t.Fatalf("after close: %q mode %o uid %d", b, st.Mode().Perm(), sys.Uid)
	}
}
