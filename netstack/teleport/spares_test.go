package teleport

import (
	"io"
	"net"
	"testing"
	"time"
)

// A spare keeps what a server that speaks first sent before it was taken,
// and a spare the other end closed shows as dead before it is handed out.
func TestSpareStream(t *testing.T) {
	a, b := net.Pipe()
	s := newSpare(a)
	go b.Write([]byte("220 hello\r\n"))
	buf := make([]byte, 4)
	if n, err := s.Read(buf); err != nil || string(buf[:n]) != "220 " {
		t.Fatalf("first read: %q %v", buf[:n], err)
	}
	rest := make([]byte, 16)
	if n, err := s.Read(rest); err != nil || string(rest[:n]) != "hello\r\n" {
		t.Fatalf("rest of the greeting: %q %v", rest[:n], err)
	}
	go b.Write([]byte("more"))
	if n, err := s.Read(rest); err != nil || string(rest[:n]) != "more" {
		t.Fatalf("then straight from the stream: %q %v", rest[:n], err)
	}
	if s.dead() {
		t.Error("a stream that answered is not dead")
	}

	c, d := net.Pipe()
	closed := newSpare(c)
	d.Close()
	deadline := time.Now().Add(time.Second)
	for !closed.dead() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if !closed.dead() {
		t.Fatal("a stream the other end closed is not dead")
	}
	if _, err := closed.Read(buf); err != io.EOF {
		t.Errorf("read of a closed spare: %v", err)
	}
}

// takeSpare skips dead spares and hands out live ones, at most
// sparesPerPort kept.
func TestTakeSpareSkipsTheDead(t *testing.T) {
	f := &forwarder{spares: map[string][]*spareStream{}}
	dead, peer := net.Pipe()
	peer.Close()
	live, _ := net.Pipe()
	ds, ls := newSpare(dead), newSpare(live)
	for !ds.dead() {
		time.Sleep(time.Millisecond)
	}
	f.spares["ns/p:80"] = []*spareStream{ds, ls}
	if got := f.takeSpare("ns/p:80"); got != ls {
		t.Fatalf("took %v, want the live spare", got)
	}
	if got := f.takeSpare("ns/p:80"); got != nil {
		t.Fatalf("took %v from an empty pool", got)
	}
}
