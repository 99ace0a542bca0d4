// Package pfconn opens connections to a pod's ports through the Kubernetes
// API server's port-forward subresource, with no local listener: one
// port-forward connection per pod, over which every dial is a new pair of
// streams. Kubernetes RBAC (create on pods/portforward) guards it, and the
// laptop needs no route to the pod network.
package pfconn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport/spdy"
)

// Conn is one port-forward connection to a pod.
type Conn struct {
	Namespace, Pod string

	conn   httpstream.Connection
	nextID atomic.Int64
}

// Dial opens a port-forward connection to a pod. SPDY is used directly
// (kubectl's default tunnels SPDY inside WebSocket, one more framing layer).
func Dial(ctx context.Context, cfg *rest.Config, kube kubernetes.Interface, namespace, pod string) (*Conn, error) {
	transport, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		return nil, err
	}
	url := kube.CoreV1().RESTClient().Post().Resource("pods").Namespace(namespace).Name(pod).SubResource("portforward").URL()
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, url)
	type result struct {
		conn httpstream.Connection
		err  error
	}
	done := make(chan result, 1)
	go func() {
		c, _, err := dialer.Dial(portForwardProtocolV1)
		done <- result{c, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, fmt.Errorf("port-forward to pod %s/%s: %w", namespace, pod, r.err)
		}
		return &Conn{Namespace: namespace, Pod: pod, conn: r.conn}, nil
	case <-ctx.Done():
		go func() {
			if r := <-done; r.conn != nil {
				r.conn.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// The port-forward protocol's names (k8s.io/api/core/v1 holds the headers).
const portForwardProtocolV1 = "portforward.k8s.io"

// Done is closed when the connection ends (the pod went away, the API
// server closed it, or Close was called).
func (c *Conn) Done() <-chan bool { return c.conn.CloseChan() }

// Close ends the connection and every stream on it.
func (c *Conn) Close() error { return c.conn.Close() }

// DialPort opens a stream to a port of the pod. The stream is a net.Conn;
// an error the kubelet reports for it (nothing listens there, say) is
// returned by the next Read.
func (c *Conn) DialPort(ctx context.Context, port int) (net.Conn, error) {
	id := strconv.FormatInt(c.nextID.Add(1), 10)
	headers := func(kind string) http.Header {
		h := http.Header{}
		h.Set(corev1.StreamType, kind)
		h.Set(corev1.PortHeader, strconv.Itoa(port))
		h.Set(corev1.PortForwardRequestIDHeader, id)
		return h
	}
	// Both streams at once: each creation waits for the other end's reply,
	// and the kubelet pairs them by request id in either order (kubectl
	// creates them one after the other: two round trips instead of one).
	var errStream httpstream.Stream
	var errErr error
	created := make(chan struct{})
	go func() {
		defer close(created)
		errStream, errErr = c.conn.CreateStream(headers(corev1.StreamTypeError))
	}()
	data, dataErr := c.conn.CreateStream(headers(corev1.StreamTypeData))
	<-created
	if errErr != nil || dataErr != nil {
		for _, st := range []httpstream.Stream{errStream, data} {
			if st != nil {
				c.conn.RemoveStreams(st)
			}
		}
		return nil, fmt.Errorf("port-forward to %s/%s:%d: %w", c.Namespace, c.Pod, port, errors.Join(errErr, dataErr))
	}
	errStream.Close() // nothing is written to it
	s := &stream{Stream: data, errStream: errStream, owner: c, port: port, remoteErr: make(chan struct{})}
	go s.watchErrors()
	return s, nil
}

// stream adapts a port-forward data stream to net.Conn.
type stream struct {
	httpstream.Stream
	errStream httpstream.Stream
	owner     *Conn
	port      int

	remoteErr chan struct{}
	errMsg    atomic.Value // string
	closeOnce sync.Once
}

func (s *stream) watchErrors() {
	msg, _ := io.ReadAll(s.errStream)
	if len(msg) > 0 {
		s.errMsg.Store(strings.TrimSpace(string(msg)))
		close(s.remoteErr)
		_ = s.Stream.Reset()
	}
}

func (s *stream) remoteError() error {
	if v, ok := s.errMsg.Load().(string); ok && v != "" {
		return fmt.Errorf("pod %s/%s port %d: %s", s.owner.Namespace, s.owner.Pod, s.port, v)
	}
	return nil
}

func (s *stream) Read(p []byte) (int, error) {
	n, err := s.Stream.Read(p)
	if err != nil {
		if rerr := s.remoteError(); rerr != nil {
			return n, rerr
		}
	}
	return n, err
}

func (s *stream) Write(p []byte) (int, error) {
	n, err := s.Stream.Write(p)
	if err != nil {
		if rerr := s.remoteError(); rerr != nil {
			return n, rerr
		}
	}
	return n, err
}

// CloseWrite half-closes: the pod's side sees EOF.
func (s *stream) CloseWrite() error { return s.Stream.Close() }

func (s *stream) Close() error {
	s.closeOnce.Do(func() {
		_ = s.Stream.Close()
		_ = s.Stream.Reset()
		s.owner.conn.RemoveStreams(s.Stream, s.errStream)
	})
	return nil
}

type addr string

func (a addr) Network() string { return "portforward" }
func (a addr) String() string  { return string(a) }

func (s *stream) LocalAddr() net.Addr { return addr("local") }
func (s *stream) RemoteAddr() net.Addr {
	return addr(fmt.Sprintf("%s/%s:%d", s.owner.Namespace, s.owner.Pod, s.port))
}

// Deadlines are not supported by port-forward streams; callers that need
// timeouts use contexts and Close.
func (s *stream) SetDeadline(time.Time) error      { return errNoDeadline }
func (s *stream) SetReadDeadline(time.Time) error  { return errNoDeadline }
func (s *stream) SetWriteDeadline(time.Time) error { return errNoDeadline }

var errNoDeadline = errors.New("port-forward streams have no deadlines")
