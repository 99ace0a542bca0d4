//go:build linux

package sandbox

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The test binary is also the sandbox's init, as kubectl-cz is.
func TestMain(m *testing.M) {
	if IsInit() {
		os.Exit(Init())
	}
	os.Exit(m.Run())
}

// output is what a sandbox's command wrote.
type output struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	done chan struct{}
}

// all waits for the command's end and returns what it wrote.
func (o *output) all() string {
	<-o.done
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// waitFor waits until the command wrote s.
func (o *output) waitFor(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		o.mu.Lock()
		ok := strings.Contains(o.buf.String(), s)
		o.mu.Unlock()
		if ok {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the command did not write %q", s)
}

// start starts a sandbox whose command writes into the returned output.
func start(t *testing.T) (*Sandbox, *output) {
	t.Helper()
	if err := Supported(); err != nil {
		t.Skip(err)
	}
	r, w, _ := os.Pipe()
	devnull, _ := os.Open(os.DevNull)
	s, err := Start(devnull, w, w)
	w.Close()
	devnull.Close()
	if err != nil {
		t.Skip("no namespaces here:", err)
	}
	t.Cleanup(func() { s.Close() })
	o := &output{done: make(chan struct{})}
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := r.Read(b)
			o.mu.Lock()
			o.buf.Write(b[:n])
			o.mu.Unlock()
			if err != nil {
				close(o.done)
				return
			}
		}
	}()
	return s, o
}

// The command has its own resolv.conf and its own network: an address put
// there and a listener on it answer inside, not on this machine; the exit
// code comes back.
func TestSandboxNetworkAndResolver(t *testing.T) {
	hostResolv, _ := os.ReadFile("/etc/resolv.conf")
	s, out := start(t)
	ip := net.ParseIP("10.255.77.1")
	if err := s.AddAddress(ip); err != nil {
		t.Fatal(err)
	}
	// A loopback port free on this machine (dialing elsewhere would leave it).
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	loop := free.Addr().String()
	free.Close()
	l, err := s.Listen(loop)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("from the sandbox\n"))
			c.Close()
		}
	}()
	if err := s.SetResolvConf([]byte("nameserver 127.0.21.53\n")); err != nil {
		t.Fatal(err)
	}
	// Reached from inside the sandbox (the init dials there), at the added
	// address too...
	for _, addr := range []string{loop, "10.255.77.1:" + strings.Split(loop, ":")[1]} {
		if addr != loop {
			l2, err := s.Listen(addr)
			if err != nil {
				t.Fatal(err)
			}
			defer l2.Close()
			go func() {
				c, err := l2.Accept()
				if err == nil {
					c.Write([]byte("from the sandbox\n"))
					c.Close()
				}
			}()
		}
		c, err := s.Dial(context.Background(), addr)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(c)
		c.Close()
		if string(b) != "from the sandbox\n" {
			t.Errorf("inside, %s: %q", addr, b)
		}
	}
	// ...and not from this machine's loopback.
	if c, err := net.DialTimeout("tcp", loop, 300*time.Millisecond); err == nil {
		c.Close()
		t.Error("the sandbox's listener answers on this machine")
	}
	if err := s.Run([]string{"sh", "-c", "cat /etc/resolv.conf; exit 5"}, os.Environ(), ""); err != nil {
		t.Fatal(err)
	}
	code, err := s.Wait(context.Background())
	if err != nil || code != 5 {
		t.Errorf("exit code %d %v, want 5", code, err)
	}
	if got := out.all(); got != "nameserver 127.0.21.53\n" {
		t.Errorf("the command's resolv.conf: %q", got)
	}
	if after, _ := os.ReadFile("/etc/resolv.conf"); !bytes.Equal(after, hostResolv) {
		t.Error("this machine's resolv.conf changed")
	}
}

// A signal sent to the sandbox reaches the command; the command and what
// it started end with the sandbox.
func TestSandboxSignalsAndEnd(t *testing.T) {
	s, out := start(t)
	if err := s.Run([]string{"sh", "-c", "trap 'echo termed; exit 42' TERM; echo ready; while :; do sleep 0.05; done"}, os.Environ(), ""); err != nil {
		t.Fatal(err)
	}
	out.waitFor(t, "ready") // the trap is set
	if err := s.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if code, err := s.Wait(ctx); err != nil || code != 42 {
		t.Errorf("exit code %d %v, want the trap's 42", code, err)
	}
	if got := out.all(); !strings.Contains(got, "termed") {
		t.Errorf("output %q", got)
	}
}

// This process's signals are taken in one place: before the command is
// asked for they are the caller's (early), from the request on the
// command's, also one sent while the command already runs but its start's
// reply has not come yet.
func TestSandboxRelaysSignalsAroundTheStart(t *testing.T) {
	s, out := start(t)
	early := make(chan os.Signal, 8)
	s.RelaySignals(func(sig os.Signal) { early <- sig })
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	select {
	case sig := <-early:
		if sig != syscall.SIGHUP {
			t.Errorf("early got %v", sig)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a signal before the command's start did not reach early")
	}
	// Signalled the moment the command has set its trap, which may come
	// before Run returns.
	sent := make(chan error, 1)
	go func() {
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			out.mu.Lock()
			ready := strings.Contains(out.buf.String(), "ready")
			out.mu.Unlock()
			if ready {
				sent <- syscall.Kill(os.Getpid(), syscall.SIGTERM)
				return
			}
		}
		sent <- errors.New("the command did not write ready")
	}()
	if err := s.Run([]string{"sh", "-c", "trap 'echo termed; exit 42' TERM; echo ready; while :; do sleep 0.05; done"}, os.Environ(), ""); err != nil {
		t.Fatal(err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if code, err := s.Wait(ctx); err != nil || code != 42 {
		t.Errorf("exit code %d %v, want the trap's 42", code, err)
	}
	select {
	case sig := <-early:
		t.Errorf("the command's signal %v went to early too", sig)
	default:
	}
}
