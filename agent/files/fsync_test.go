package files

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/pkg/sftp"
)

// serveFiltered runs pkg/sftp's server behind the fsync filter on one end of
// a connection and returns a client on the other, as the file server does.
func serveFiltered(t *testing.T) *sftp.Client {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		srv, err := sftp.NewServer(withFsync(c), sftp.WithMaxTxPacket(MaxPacket))
		if err == nil {
			_ = srv.Serve()
		}
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	client, err := sftp.NewClientPipe(c, c, sftp.MaxPacketUnchecked(MaxPacket), sftp.UseConcurrentWrites(true), sftp.UseConcurrentReads(true))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return client
}

// The server advertises fsync@openssh.com, a Sync after writes succeeds,
// large writes and reads pass the filter intact, and a Sync of a handle
// the server never opened fails rather than pretending.
func TestFsyncReachesTheFile(t *testing.T) {
	client := serveFiltered(t)
	if v, ok := client.HasExtension("fsync@openssh.com"); !ok || v != "1" {
		t.Fatalf("fsync not advertised: %q %v", v, ok)
	}
	p := filepath.Join(t.TempDir(), "data")
	f, err := client.OpenFile(p, os.O_CREATE|os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte("fsync me "), 1<<20) // 9 MiB, many packets
	if _, err := f.WriteAt(want, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("sync: %v", err)
	}
	got := make([]byte, len(want))
	if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read back through the filter: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(p); err != nil || !bytes.Equal(b, want) {
		t.Fatalf("on disk: %v", err)
	}
	if err := f.Sync(); err == nil {
		t.Error("a sync of a closed file succeeded")
	}
	// Other requests after ours still get their answers in order.
	if _, err := client.Stat(p); err != nil {
		t.Fatal(err)
	}
}

func TestFsyncOfAnUnknownHandleFails(t *testing.T) {
	if err := fsyncPath("", false); err == nil {
		t.Error("an unknown handle was synced")
	}
	if err := fsyncPath(filepath.Join(t.TempDir(), "gone"), true); err == nil {
		t.Error("a file that is gone was synced")
	}
}
