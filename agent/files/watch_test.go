package files

import (
	"bufio"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The watch stream names each change under the roots: a file written, one
// made in a folder created after the watch began, one removed; and it ends
// when the laptop hangs up.
func TestWatchStreamsChanges(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "a.txt"), []byte("a"), 0o644)
	laptop, agent := net.Pipe()
	done := make(chan error, 1)
	go func() {
		r := bufio.NewReader(agent)
		if _, err := r.ReadByte(); err != nil {
			done <- err
			return
		}
		done <- serveWatch(agent, r)
	}()
	req, _ := json.Marshal(WatchRequest{Roots: []string{root}})
	go laptop.Write(append(append([]byte{WatchMagic}, req...), '\n'))
	lines := bufio.NewScanner(laptop)
	next := func() string {
		t.Helper()
		got := make(chan string, 1)
		go func() {
			if lines.Scan() {
				got <- lines.Text()
			} else {
				got <- "<end>"
			}
		}()
		select {
		case l := <-got:
			return l
		case <-time.After(5 * time.Second):
			t.Fatal("no change reported")
			return ""
		}
	}
	if l := next(); l != "." {
		t.Fatalf("ready line: %q", l)
	}
	expect := func(want string) {
		t.Helper()
		for {
			if l := next(); l == want {
				return
			} else if !strings.HasPrefix(l, root) {
				t.Fatalf("unexpected line %q", l)
			}
		}
	}
	os.WriteFile(filepath.Join(root, "a.txt"), []byte("changed"), 0o644)
	expect(filepath.Join(root, "a.txt"))
	os.Mkdir(filepath.Join(root, "new"), 0o755)
	expect(filepath.Join(root, "new"))
	time.Sleep(50 * time.Millisecond) // the new folder's watch
	os.WriteFile(filepath.Join(root, "new", "b.txt"), []byte("b"), 0o644)
	expect(filepath.Join(root, "new", "b.txt"))
	os.Remove(filepath.Join(root, "a.txt"))
	expect(filepath.Join(root, "a.txt"))
	laptop.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the watch did not end when the laptop hung up")
	}
}
