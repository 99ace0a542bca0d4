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
// replacement is ready still finds one.
const sparesPerPort = 2

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

// takeSpare hands out a spare of a pod's port, if a live one is there.
func (f *forwarder) takeSpare(key string) net.Conn {
	for {
		f.mu.Lock()
		list := f.spares[key]
		if len(list) == 0 {
			f.mu.Unlock()
			return nil
		}
		s := list[0]
		f.spares[key] = list[1:]
		f.mu.Unlock()
		if !s.dead() && time.Since(s.created) < spareIdle {
			return s
		}
		s.Close()
	}
}

// refill opens a new spare for a pod's port in the background.
func (f *forwarder) refill(c *pfconn.Conn, key string, port int) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := c.DialPort(ctx, port)
		if err != nil {
			return
		}
		s := newSpare(st)
		f.mu.Lock()
		full := len(f.spares[key]) >= sparesPerPort
		if !full {
			f.spares[key] = append(f.spares[key], s)
		}
		f.mu.Unlock()
		if full {
			s.Close()
			return
		}
		time.AfterFunc(spareIdle, func() {
			f.mu.Lock()
			list := f.spares[key]
			expired := false
			for i, other := range list {
				if other == s {
					f.spares[key] = append(list[:i:i], list[i+1:]...)
					expired = true
					break
				}
			}
			f.mu.Unlock()
			if expired {
				s.Close()
			}
		})
	}()
}

// closeSpares closes the spares of the pods ("ns/pod") keep says no to.
func (f *forwarder) closeSpares(keep func(pod string) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for key, list := range f.spares {
		if pod, _, _ := strings.Cut(key, ":"); !keep(pod) {
			for _, s := range list {
				s.Close()
			}
			delete(f.spares, key)
		}
	}
}
