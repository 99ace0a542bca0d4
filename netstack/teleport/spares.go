package teleport

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/kubectl-cz/kubectl-cz/pfconn"
)

// A new connection through port-forward waits for its streams to be
// created and for the kubelet to connect to the pod's port. A spare stream,
// opened after each use of a pod's port, has done that already: the next
// connection to that port takes it and its first byte costs one round trip.
// A spare is closed unused after spareIdle, and one the other end closed
// (a server with a short idle timeout) is not replaced until the next use.
const spareIdle = 30 * time.Second

// sparesPerPort: two, so a connection that comes before the last one's
// replacement is ready still finds one; a pool is filled again once it is
// down to sparesLow, counting the spares being opened, so no more are
// opened than kept (each costs the cluster ~5.6 ms of CPU, measured on the
// local cluster: API server 0.95, kubelet 1.0, containerd 2.4 per pair).
const sparesPerPort, sparesLow = 2, 1

// A replacement is opened once the taken stream's first answer came back
// (or after refillAfter): opened at the same time, its creation (a stream
// pair, and the kubelet's side dialing the pod) competed with the request
// for this machine's CPUs and doubled the new connection's first byte
// (1.0 ms to 2.7 ms p50, measured on the local cluster).
const refillAfter = 50 * time.Millisecond

// spareStream is an opened stream whose first read is already under way,
// so a stream the pod closed shows before it is handed out.
type spareStream struct {
	net.Conn
	done    chan struct{} // the first read returned
	buf     []byte
	err     error
	created time.Time
	once    sync.Once
}

func newSpare(c net.Conn) *spareStream {
	s := &spareStream{Conn: c, done: make(chan struct{}), created: time.Now()}
	go func() {
		b := make([]byte, 32<<10)
		n, err := c.Read(b)
		s.buf, s.err = b[:n], err
		close(s.done)
	}()
	return s
}

// answered is closed once the first read returned: data, EOF or an error.
func (s *spareStream) answered() <-chan struct{} { return s.done }

// CloseWrite half-closes the stream underneath, so a client's half-close
// still reaches the pod through relay.Pipe.
func (s *spareStream) CloseWrite() error {
	if cw, ok := s.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return s.Conn.Close()
}

// dead says the pod closed it before it was used.
func (s *spareStream) dead() bool {
	select {
	case <-s.done:
		return s.err != nil && len(s.buf) == 0
	default:
		return false
	}
}

// Read returns what the first read got, then reads on.
func (s *spareStream) Read(p []byte) (int, error) {
	<-s.done
	if len(s.buf) > 0 {
		n := copy(p, s.buf)
		s.buf = s.buf[n:]
		return n, nil
	}
	if s.err != nil {
		err := s.err
		s.err = nil
		if err != io.EOF {
			return 0, err
		}
		return 0, io.EOF
	}
	return s.Conn.Read(p)
}

// sparePool is a pod port's spares and how many are being opened.
type sparePool struct {
	list    []*spareStream
	opening int
}

// takeSpare hands out a spare of a pod's port, if a live one is there, and
// says how many to open now to fill its pool again (counted as opening).
func (f *forwarder) takeSpare(key string) (*spareStream, *sparePool, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.spares[key]
	if p == nil {
		p = &sparePool{}
		f.spares[key] = p
	}
	var s *spareStream
	for s == nil && len(p.list) > 0 {
		s, p.list = p.list[0], p.list[1:]
		if s.dead() || time.Since(s.created) >= spareIdle {
			s.Close()
			s = nil
		}
	}
	want := 0
	if have := len(p.list) + p.opening; have <= sparesLow {
		want = sparesPerPort - have
		p.opening += want
	}
	return s, p, want
}

// release gives back n spares takeSpare counted as opening but that will
// not be opened.
func (f *forwarder) release(p *sparePool, n int) {
	f.mu.Lock()
	p.opening -= n
	f.mu.Unlock()
}

// refillAfterAnswer opens n new spares for a pod's port in the background,
// once used has its first answer (see refillAfter).
func (f *forwarder) refillAfterAnswer(c *pfconn.Conn, used *spareStream, key string, p *sparePool, port, n int) {
	if n == 0 {
		return
	}
	go func() {
		t := time.NewTimer(refillAfter)
		defer t.Stop()
		select {
		case <-used.answered():
		case <-t.C:
		case <-c.Done():
		}
		for i := 0; i < n; i++ {
			go f.refill(c, key, p, port)
		}
	}()
}

// refill opens a new spare for a pod's port's pool p.
func (f *forwarder) refill(c *pfconn.Conn, key string, p *sparePool, port int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := c.DialPort(ctx, port)
	f.mu.Lock()
	p.opening--
	kept := err == nil && f.spares[key] == p
	var s *spareStream
	if kept {
		s = newSpare(st)
		p.list = append(p.list, s)
	}
	f.mu.Unlock()
	if err != nil {
		return
	}
	if !kept {
		st.Close()
		return
	}
	time.AfterFunc(spareIdle, func() {
		f.mu.Lock()
		expired := false
		for i, other := range p.list {
			if other == s {
				p.list = append(p.list[:i:i], p.list[i+1:]...)
				expired = true
				break
			}
		}
		f.mu.Unlock()
		if expired {
			s.Close()
		}
	})
}

// closeSpares closes the spares of the pods ("ns/pod") keep says no to.
func (f *forwarder) closeSpares(keep func(pod string) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for key, p := range f.spares {
		if pod, _, _ := strings.Cut(key, ":"); !keep(pod) {
			for _, s := range p.list {
				s.Close()
			}
			delete(f.spares, key)
		}
	}
}
