package files

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/pkg/sftp"
)

// The file server ends itself once no laptop has been connected for
// IdleExit, and never while one is.
func TestIdleExit(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s := &Server{IdleExit: 1500 * time.Millisecond, Ready: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background(), addr) }()
	<-s.Ready
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	client, err := sftp.NewClientPipe(c, c, sftp.MaxPacketUnchecked(MaxPacket))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Getwd(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("exited with a laptop connected: %v", err)
	case <-time.After(3 * time.Second):
	}
	client.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still running 10 s after the last connection closed")
	}
}
