package teleport

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/kubectl-cz/kubectl-cz/relay"
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
	f := &forwarder{spares: map[string]*sparePool{}}
	dead, peer := net.Pipe()
	peer.Close()
	live, _ := net.Pipe()
	ds, ls := newSpare(dead), newSpare(live)
	for !ds.dead() {
		time.Sleep(time.Millisecond)
	}
	f.spares["ns/p:80"] = &sparePool{list: []*spareStream{ds, ls}}
	if got, _, _ := f.takeSpare("ns/p:80"); got != ls {
		t.Fatalf("took %v, want the live spare", got)
	}
	if got, _, _ := f.takeSpare("ns/p:80"); got != nil {
		t.Fatalf("took %v from an empty pool", got)
	}
}

// A client's half-close reaches the pod through a spare, which still
// carries the answer back (a request, then shutdown(SHUT_WR), then read).
func TestSpareKeepsHalfClose(t *testing.T) {
	podSide, pod := tcpPair(t)
	laptop, client := tcpPair(t)
	go relay.Pipe(laptop, newSpare(podSide))
	go func() {
		req, _ := io.ReadAll(pod) // to the client's half-close
		pod.Write(append([]byte("answer to "), req...))
		pod.Close()
	}()
	client.Write([]byte("question"))
	client.(*net.TCPConn).CloseWrite()
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(client)
	if err != nil || string(got) != "answer to question" {
		t.Fatalf("answer after a half-close: %q %v", got, err)
	}
}

func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// A pool asks for spares only up to sparesPerPort, counting those being
// opened: each costs the cluster a stream pair.
func TestSparePoolOpensNoMoreThanKept(t *testing.T) {
	f := &forwarder{spares: map[string]*sparePool{}}
	s, p, want := f.takeSpare("ns/p:80")
	if s != nil || want != sparesPerPort {
		t.Fatalf("first use: spare %v, want %d spares opened, got %d", s, sparesPerPort, want)
	}
	if _, _, again := f.takeSpare("ns/p:80"); again != 0 {
		t.Fatalf("while %d are being opened, %d more asked for", want, again)
	}
	f.release(p, want) // they failed
	if _, _, again := f.takeSpare("ns/p:80"); again != sparesPerPort {
		t.Fatalf("after failed opens: %d asked for, want %d", again, sparesPerPort)
	}
}
