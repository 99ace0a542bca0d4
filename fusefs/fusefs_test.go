package fusefs

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkg/sftp"
)

// mountLocal serves a local folder over SFTP on loopback and mounts it, as
// `kubectl cz mount` does over port-forward.
func mountLocal(t *testing.T, remoteDir string) string {
	t.Helper()
	return mountLocalVia(t, remoteDir, func(r Remote) Remote { return r })
}

// mountLocalVia mounts with the remote wrapped (to count what reaches it).
func mountLocalVia(t *testing.T, remoteDir string, wrap func(Remote) Remote) string {
	t.Helper()
	dir, _ := mountServed(t, remoteDir, wrap)
	return dir
}

// mountServed mounts and returns the mount too.
func mountServed(t *testing.T, remoteDir string, wrap func(Remote) Remote) (string, *Mounted) {
	t.Helper()
	return mountServedAs(t, remoteDir, wrap, nil)
}

// mountServedAs mounts with the remote user's files shown as owner's.
func mountServedAs(t *testing.T, remoteDir string, wrap func(Remote) Remote, owner *Owner) (string, *Mounted) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			srv, _ := sftp.NewServer(c)
			go srv.Serve()
		}
	}()
	conn, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	client, err := sftp.NewClientPipe(conn, conn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	mnt := t.TempDir()
	srv, err := Mount(mnt, wrap(SFTP{client}), []string{remoteDir}, false, owner)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Unmount() })
	return filepath.Join(mnt, remoteDir), srv
}

func TestEditorGrepAndGitOperations(t *testing.T) {
	remote := t.TempDir()
	os.WriteFile(filepath.Join(remote, "seed.txt"), []byte("hello from the pod\n"), 0o644)
	os.Mkdir(filepath.Join(remote, "sub"), 0o755)
	os.WriteFile(filepath.Join(remote, "sub", "deep.txt"), []byte("needle\n"), 0o600)
	local := mountLocal(t, remote)

	if b, err := os.ReadFile(filepath.Join(local, "seed.txt")); err != nil || string(b) != "hello from the pod\n" {
		t.Fatalf("read: %q %v", b, err)
	}
	// An editor's save: write a temporary file, then rename it over the original.
	tmp := filepath.Join(local, ".seed.txt.swp")
	if err := os.WriteFile(tmp, []byte("edited\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(local, "seed.txt")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(remote, "seed.txt")); string(b) != "edited\n" {
		t.Fatalf("the remote side has %q", b)
	}
	out, err := exec.Command("grep", "-r", "needle", local).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "sub/deep.txt:needle") {
		t.Fatalf("grep -r: %v %s", err, out)
	}
	// Append, truncate, mkdir, remove, chmod.
	f, err := os.OpenFile(filepath.Join(local, "sub", "deep.txt"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("more\n")
	f.Close()
	if b, _ := os.ReadFile(filepath.Join(remote, "sub", "deep.txt")); string(b) != "needle\nmore\n" {
		t.Fatalf("append: %q", b)
	}
	if err := os.Truncate(filepath.Join(local, "sub", "deep.txt"), 3); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(local, "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(local, "seed.txt"), 0o600); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(filepath.Join(remote, "seed.txt")); st.Mode().Perm() != 0o600 {
		t.Fatalf("chmod: %v", st.Mode())
	}
	if err := os.RemoveAll(filepath.Join(local, "a")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(remote, "a")); !os.IsNotExist(err) {
		t.Fatalf("rm -r left %v", err)
	}
	// git, the hardest everyday user: init, add, commit, status.
	if _, err := exec.LookPath("git"); err == nil {
		git := func(args ...string) string {
			cmd := exec.Command("git", append([]string{"-C", local, "-c", "user.email=t@t", "-c", "user.name=t"}, args...)...)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("git %v: %v\n%s", args, err, out)
			}
			return string(out)
		}
		git("init", "-q")
		git("add", "-A")
		git("commit", "-q", "-m", "from the laptop")
		if st := git("status", "--porcelain"); st != "" {
			t.Fatalf("git status after commit: %q", st)
		}
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	if err := os.WriteFile(filepath.Join(local, "big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(local, "big")); !bytes.Equal(b, big) {
		t.Fatal("1 MiB did not come back intact")
	}
}
