package mount

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/pkg/sftp"
)

// A dropped connection (the port-forward) is replaced on the next
// operation, which then succeeds.
func TestRedialAfterTheConnectionDrops(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			srv, _ := sftp.NewServer(c)
			go srv.Serve()
		}
	}()
	dials := 0
	r, err := NewRedialer(func() (*sftp.Client, func(), error) {
		dials++
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			return nil, nil, err
		}
		client, err := sftp.NewClientPipe(c, c)
		if err != nil {
			return nil, nil, err
		}
		return client, func() { client.Close() }, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644)
	if _, err := r.Lstat(filepath.Join(dir, "f")); err != nil {
		t.Fatal(err)
	}
	// The network drops the connection.
	mu.Lock()
	for _, c := range conns {
		c.Close()
	}
	mu.Unlock()
	fi, err := r.Lstat(filepath.Join(dir, "f"))
	if err != nil || fi.Size() != 1 {
		t.Fatalf("after the drop: %v %v", fi, err)
	}
	if dials != 2 {
		t.Fatalf("%d dials, want 2", dials)
	}
	// An answer of the file server (no such file) is not a lost connection.
	if _, err := r.Lstat(filepath.Join(dir, "missing")); !os.IsNotExist(err) || dials != 2 {
		t.Fatalf("a missing file: %v, %d dials", err, dials)
	}
	f, err := r.OpenFile(filepath.Join(dir, "f"), os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	if n, err := f.ReadAt(b, 0); n != 1 && err != io.EOF {
		t.Fatalf("read: %d %v", n, err)
	}
	f.Close()
}
