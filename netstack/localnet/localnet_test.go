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

func TestResolverLines(t *testing.T) {
	cur := "# comment\nnameserver 10.0.0.2\nnameserver 127.0.21.53\nsearch corp.example\nsearch last.example shop.svc.cluster.local\noptions edns0\n"
	ns, search, ups := ResolverLines([]byte(cur), "127.0.21.53", []string{"shop.svc.cluster.local", "svc.cluster.local"})
	if strings.Join(ns, "|") != "nameserver 127.0.21.53" {
		t.Errorf("nameserver %q", ns)
	}
	// The search line in force (the last) follows the cluster's, once each.
	if strings.Join(search, "|") != "search shop.svc.cluster.local svc.cluster.local last.example" {
		t.Errorf("search %q", search)
	}
	// The shim's own address (a teleport that crashed) is not an upstream.
	if len(ups) != 1 || ups[0] != "10.0.0.2:53" {
		t.Errorf("upstreams %v", ups)
	}
}

// An env file replaces a file that was there by setting it aside: the
// journal holds no byte of either, closing the session gives back the very
// file (content, mode, inode); a file created is removed; someone else's
// change is a conflict that --force overrides.
func TestWriteFileSetsTheOriginalAside(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	open := func() *session.Session {
		s, err := session.Open(session.Config{StateDir: filepath.Join(dir, "state")})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	journal := func(s *session.Session) []byte {
		b, _ := os.ReadFile(filepath.Join(dir, "state", "sessions", s.ID()+".jsonl"))
		return b
	}
	inode := func(p string) uint64 {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return st.Sys().(*syscall.Stat_t).Ino
	}
	p := filepath.Join(dir, "core.env")
	os.WriteFile(p, []byte("OLD_SECRET=tiger\n"), 0o644)
	ino := inode(p)

	s := open()
	if err := WriteFile(ctx, s, p, []byte("SECRET=hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "SECRET=hunter2\n" {
		t.Fatalf("written %q", b)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %o", st.Mode().Perm())
	}
	for _, secret := range []string{"tiger", "hunter2"} {
		j := journal(s)
		if bytes.Contains(j, []byte(secret)) || bytes.Contains(j, []byte(base64.StdEncoding.EncodeToString([]byte("SECRET="+secret+"\n")))) ||
			bytes.Contains(j, []byte(base64.StdEncoding.EncodeToString([]byte("OLD_SECRET="+secret+"\n")))) {
			t.Fatalf("the local journal holds %q", secret)
		}
	}
	// Someone edits the env file: a conflict, nothing moves.
	os.WriteFile(p, []byte("EDITED=1\n"), 0o600)
	if _, err := s.Close(ctx, session.CloseOptions{}); !errors.Is(err, session.ErrConflict) {
		t.Fatalf("close after an edit: %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "EDITED=1\n" {
		t.Fatal("a conflict overwrote the file")
	}
	if _, err := s.Close(ctx, session.CloseOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "OLD_SECRET=tiger\n" || inode(p) != ino {
		t.Fatalf("after close: %q, inode %d (was %d)", b, inode(p), ino)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o644 {
		t.Fatalf("mode after close %o", st.Mode().Perm())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".core.env.cz-saved-*")); len(left) != 0 {
		t.Fatalf("left behind: %v", left)
	}

	// A file that was not there is removed, also after the close ran once.
	q := filepath.Join(dir, "new.env")
	s = open()
	if err := WriteFile(ctx, s, q, []byte("A=1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Close(ctx, session.CloseOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(q); !os.IsNotExist(err) {
		t.Fatal("a file the session created is still there")
	}
}

// A forged file entry cannot make an undo rename another file over the
// path, nor remove a file by a relative name.
func TestForgedFileEntriesAreRefused(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	os.WriteFile(victim, []byte("keep"), 0o644)
	for _, d := range []fileData{
		{Path: filepath.Join(dir, "core.env"), Saved: victim, SavedSHA256: sha([]byte("keep"))},
		{Path: filepath.Join(dir, "core.env"), Saved: filepath.Join(dir, "other", ".core.env.cz-saved-1")},
		{Path: "core.env", Absent: true},
		{Path: filepath.Join(dir, "core.env"), Absent: true, Saved: filepath.Join(dir, ".core.env.cz-saved-1")},
	} {
		raw, _ := json.Marshal(d)
		if err := undoFile(context.Background(), &session.UndoContext{Force: true, Log: io.Discard}, session.Entry{Data: raw}); err == nil {
			t.Errorf("%+v: undone", d)
		}
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep" {
		t.Fatal("a forged entry changed a file")
	}
}

// Two sessions' blocks, at the top and the bottom, kept current in place,
// come out in either order and give the file back byte for byte, also one
// that did not end in a newline.
func TestBlocksComeOutInEitherOrder(t *testing.T) {
	for _, orig := range []string{"", "127.0.0.1 localhost\n", "127.0.0.1 localhost", "nameserver 10.0.0.2\nsearch corp\n"} {
		put := func(c []byte, id string) []byte {
			c = insertBlock(c, id, "nameserver", true, []string{"nameserver 127.0.21.5" + id})
			c = insertBlock(c, id, "search", false, []string{"search " + id + ".svc.cluster.local corp"})
			c, _ = replaceBlock(c, id, "search", []string{"search " + id + ".svc.cluster.local svc.cluster.local corp"})
			return c
		}
		both := put(put([]byte(orig), "3"), "4")
		for _, order := range [][]string{{"3", "4"}, {"4", "3"}} {
			c := both
			for _, id := range order {
				for _, tag := range []string{"search", "nameserver"} {
					var found bool
					if c, found = removeBlock(c, id, tag); !found {
						t.Errorf("%q: block %s %s not found", orig, id, tag)
					}
				}
			}
			if string(c) != orig {
				t.Errorf("%q, out in order %v: %q", orig, order, c)
			}
		}
		if c, found := removeBlock([]byte(orig), "3", "search"); found || string(c) != orig {
			t.Errorf("%q: a block that is not there was removed", orig)
		}
	}
	// The newest search line is the last: the resolver uses it.
	c := insertBlock(insertBlock([]byte("search corp\n"), "a", "search", false, []string{"search a"}), "b", "search", false, []string{"search b"})
	if !strings.HasSuffix(string(c), "search b\n# kubectl cz teleport b search: end\n") {
		t.Errorf("%q", c)
	}
}

// A marker that does not start a line, or a block without its end, is
// left alone.
func TestBlockMarkersMustBeWhole(t *testing.T) {
	in := "x" + beginMark("a", "hosts") + beginNote + "1.2.3.4 x\n" + endMark("a", "hosts") + beginMark("a", "dns") + beginNote + "torn\n"
	for _, tag := range []string{"hosts", "dns"} {
		if out, found := removeBlock([]byte(in), "a", tag); found || string(out) != in {
			t.Errorf("%s: removed from %q", tag, in)
		}
	}
}

// The undo takes this session's block out of the file and nothing else.
func TestUndoBlock(t *testing.T) {
	p := filepath.Join(t.TempDir(), "hosts")
	orig := "127.0.0.1 localhost\n"
	os.WriteFile(p, insertBlock(insertBlock([]byte(orig), "mine", "hosts", false, []string{"10.0.0.1 a"}), "other", "hosts", false, []string{"10.0.0.2 b"}), 0o644)
	raw, _ := json.Marshal(blockData{Path: p, ID: "mine", Tag: "hosts"})
	if err := undoBlock(context.Background(), &session.UndoContext{Log: io.Discard}, session.Entry{Data: raw}); err != nil {
		t.Fatal(err)
	}
	want := string(insertBlock([]byte(orig), "other", "hosts", false, []string{"10.0.0.2 b"}))
	if b, _ := os.ReadFile(p); string(b) != want {
		t.Errorf("after undo:\n%s\nwant:\n%s", b, want)
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
