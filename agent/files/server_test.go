package files

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/pkg/sftp"

	"github.com/kubectl-cz/kubectl-cz/agent/wire"
)

// A connection without the secret, or with another one, gets no SFTP: the
// server answers the refusal and hangs up, whatever follows.
func TestRefusesWithoutTheSecret(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &Server{Ready: make(chan struct{}), Secret: wire.NewSecret()}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, addr) }()
	select {
	case <-s.Ready:
	case err := <-done:
		t.Fatal(err)
	}
	for name, hello := range map[string]func(net.Conn) error{
		"another secret": func(c net.Conn) error { return wire.Present(ctx, c, wire.NewSecret()) },
		"straight to SFTP": func(c net.Conn) error {
			client, err := sftp.NewClientPipe(c, c)
			if err == nil {
				_, err = client.Getwd()
			}
			return err
		},
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if err := hello(c); err == nil {
			t.Errorf("%s: served", name)
		}
		c.Close()
	}
	if err := (&Server{}).Run(ctx, addr); err == nil {
		t.Error("a file server without a secret started")
	}
}

// The file server ends itself once no laptop has been connected for
// IdleExit, and never while one is.
func TestIdleExit(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	secret := wire.NewSecret()
	s := &Server{IdleExit: 1500 * time.Millisecond, Ready: make(chan struct{}), Secret: secret}
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background(), addr) }()
	select {
	case <-s.Ready:
	case err := <-done:
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := wire.Present(context.Background(), c, secret); err != nil {
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

// Each stream kind's first byte tells it apart from the others and from
// SFTP, whose packets begin with a length's high byte: 0 for any packet a
// server takes.
func TestStreamMagicsDistinct(t *testing.T) {
	seen := map[byte]string{0: "SFTP"}
	for name, b := range map[string]byte{"watch": WatchMagic, "read": wire.ReadMagic, "tree": wire.TreeMagic, "write": wire.WriteMagic} {
		if other, ok := seen[b]; ok {
			t.Errorf("the %s stream's magic %q is the %s stream's", name, b, other)
		}
		seen[b] = name
	}
}
