// Package interceptor is the in-cluster half of `kubectl cz intercept`: it
// takes the intercepted Service's traffic in place of the original pods and
// routes each connection or request either to a developer's laptop, through
// the tunnel that laptop holds open over port-forward, or to the decoy
// Service that still selects the original pods. What it speaks with the
// laptop is in package agent/wire.
package interceptor

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"

	"github.com/kubectl-cz/kubectl-cz/agent/wire"
	"github.com/kubectl-cz/kubectl-cz/relay"
)

// Port is one port of the intercepted Service: where the agent listens for
// it and where the decoy Service serves it.
type Port struct {
	Name      string // the Service port's name, or its number
	Listen    int
	DecoyPort int
	// HTTP routes the port's requests by header (the intercepted port).
	// Other ports are passed to the decoy byte for byte, whatever they speak.
	HTTP bool
}

// Server is the agent's intercept router.
type Server struct {
	// Decoy is the address (ClusterIP) of the decoy Service.
	Decoy string
	Ports []Port
	Log   *slog.Logger
	// Probe is the Service's own address (ClusterIP:port of the routed
	// port), for route probes; empty: probes answer ProbeNotYet.
	Probe string
	// Secret is what every connection to the control port must present
	// first (see package wire).
	Secret string
	// Ready, if set, is closed once every port listens.
	Ready chan struct{}

	mu   sync.RWMutex
	devs map[*developer]bool

	decoyDialer net.Dialer
	decoyH2     *http2.Transport
	probeToken  string
}

// developer is one connected laptop.
type developer struct {
	hello wire.Hello
	rule  *wire.Rule // the Match, compiled (register)
	// mirror sends copies of the matching requests, for Hello.Mirror.
	mirror *mirror
	sess   *yamux.Session
	token  string
	spare  chan net.Conn // idle port-forward streams from the laptop
	h2     *http2.Transport
}

// Run listens on the control port and every Service port until ctx ends.
func (s *Server) Run(ctx context.Context, controlAddr string) error {
	if s.Log == nil {
		s.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s.devs = map[*developer]bool{}
	s.probeToken = newToken()
	s.decoyH2 = h2cTransport(s.decoyDialer.DialContext)

	var listeners []net.Listener
	closeAll := func() {
		for _, l := range listeners {
			l.Close()
		}
	}
	if !wire.ValidSecret(s.Secret) {
		return fmt.Errorf("no valid secret in $%s: the interceptor refuses to run without one", wire.SecretEnv)
	}
	// The Service ports listen before the control port, so a laptop that
	// reached the control port knows the Service can be pointed here.
	for _, p := range s.Ports {
		l, err := net.Listen("tcp", ":"+strconv.Itoa(p.Listen))
		if err != nil {
			closeAll()
			return err
		}
		listeners = append(listeners, l)
		go s.servePort(ctx, l, p)
	}
	control, err := net.Listen("tcp", controlAddr)
	if err != nil {
		closeAll()
		return err
	}
	listeners = append(listeners, control)
	go func() {
		<-ctx.Done()
		closeAll()
	}()
	s.Log.Info("interceptor ready", "decoy", s.Decoy, "ports", s.Ports, "control", controlAddr)
	if s.Ready != nil {
		close(s.Ready)
	}
	for {
		c, err := control.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go s.serveConn(ctx, c)
	}
}

// handshakeTimeout bounds how long a new control connection may take to
// present its secret and say what it is.
const handshakeTimeout = 10 * time.Second

// serveConn checks the connection's secret, then tells a tunnel (yamux)
// from a spare connection by its first byte.
func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	if err := wire.Check(c, s.Secret, handshakeTimeout); err != nil {
		s.Log.Warn("refused a control connection", "err", err)
		return
	}
	br := bufio.NewReaderSize(c, 64)
	_ = c.SetReadDeadline(time.Now().Add(handshakeTimeout))
	first, err := br.Peek(1)
	if err != nil {
		c.Close()
		return
	}
	if first[0] == wire.ProbeMagic {
		_ = c.SetReadDeadline(time.Time{})
		defer c.Close()
		verdict := wire.ProbeNotYet
		if s.routed(ctx) {
			verdict = wire.ProbeRouted
		}
		_, _ = c.Write([]byte{verdict})
		return
	}
	if first[0] == wire.CountMagic {
		defer c.Close()
		_, _ = c.Write([]byte{byte(min(s.count(), 255))})
		return
	}
	if first[0] != wire.PoolMagic {
		_ = c.SetReadDeadline(time.Time{})
		s.serveControl(ctx, &bufferedConn{Conn: c, r: br})
		return
	}
	// wire.PoolMagic, a token of fixed size, a newline: read exactly that.
	line := make([]byte, 1+tokenLen+1)
	_, err = io.ReadFull(br, line)
	_ = c.SetReadDeadline(time.Time{})
	if err != nil || line[len(line)-1] != '\n' {
		c.Close()
		return
	}
	token := string(line[1 : 1+tokenLen])
	s.mu.RLock()
	var owner *developer
	for dev := range s.devs {
		if subtle.ConstantTimeCompare([]byte(dev.token), []byte(token)) == 1 {
			owner = dev
		}
	}
	s.mu.RUnlock()
	if owner == nil {
		c.Close()
		return
	}
	select {
	case owner.spare <- &bufferedConn{Conn: c, r: br}:
	default:
		c.Close() // enough spares already
	}
}

// routed sends a probe request to the Service's own address and reports
// whether this agent's router answered it.
func (s *Server) routed(ctx context.Context) bool {
	if s.Probe == "" {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := s.decoyDialer.DialContext(ctx, "tcp", s.Probe)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintf(c, "GET /cz-probe HTTP/1.1\r\nHost: cz-probe\r\n%s: %s\r\nConnection: close\r\n\r\n", wire.ProbeHeader, s.probeToken); err != nil {
		return false
	}
	resp, err := http.ReadResponse(bufio.NewReader(io.LimitReader(c, 64<<10)), nil)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusNoContent && resp.Header.Get(wire.ProbeHeader) == "seen"
}

// isProbe: the request is this agent's own route probe.
func (s *Server) isProbe(h http.Header) bool {
	v := h.Get(wire.ProbeHeader)
	return v != "" && subtle.ConstantTimeCompare([]byte(v), []byte(s.probeToken)) == 1
}

// serveControl registers the developer that connected, until its tunnel
// closes or it leaves.
func (s *Server) serveControl(ctx context.Context, c net.Conn) {
	sess, err := yamux.Server(c, wire.YamuxConfig())
	if err != nil {
		c.Close()
		return
	}
	defer sess.Close()
	st, err := sess.AcceptStreamWithContext(ctx)
	if err != nil {
		return
	}
	defer st.Close()
	// The control stream carries a wire.Hello and a wire.Leave: a few hundred bytes.
	dec, enc := json.NewDecoder(io.LimitReader(st, maxControlBytes)), json.NewEncoder(st)
	var hello wire.Hello
	if err := dec.Decode(&hello); err != nil {
		return
	}
	dev := &developer{hello: hello, sess: sess, token: newToken(), spare: make(chan net.Conn, 64)}
	// Ready to carry requests before anyone can route to it.
	dev.h2 = h2cTransport(dev.dial)
	if err := s.register(dev); err != nil {
		_ = enc.Encode(wire.Reply{Error: err.Error()})
		// Let the laptop read the refusal and hang up first.
		select {
		case <-sess.CloseChan():
		case <-time.After(5 * time.Second):
		}
		return
	}
	_ = enc.Encode(wire.Reply{Token: dev.token, Rules: true})
	s.Log.Info("developer joined", "developer", hello.Developer, "port", hello.Port, "all", hello.All, "match", hello.Match.String())
	defer func() {
		s.unregister(dev)
		for drained := false; !drained; {
			select {
			case c := <-dev.spare:
				c.Close()
			default:
				drained = true
			}
		}
		dev.h2.CloseIdleConnections()
		if m := dev.mirror; m != nil {
			m.stop()
			s.Log.Info("mirror ended", "developer", hello.Developer, "copies", m.sent.Load(), "dropped", m.dropped.Load())
		}
		s.Log.Info("developer left", "developer", hello.Developer)
	}()
	left := make(chan struct{})
	go func() {
		defer close(left)
		var msg wire.Leave
		if err := dec.Decode(&msg); err == nil && msg.Leave {
			s.unregister(dev)
			reply := wire.Reply{Remaining: s.count()}
			if m := dev.mirror; m != nil {
				m.drain(5 * time.Second)
				reply.Mirrored, reply.Dropped = m.sent.Load(), m.dropped.Load()
			}
			_ = enc.Encode(reply)
			// Let the laptop read the reply and hang up first: closing
			// here can end its session before yamux has confirmed its own
			// write of the wire.Leave, which it would then report as failed.
			select {
			case <-sess.CloseChan():
			case <-time.After(5 * time.Second):
			case <-ctx.Done():
			}
		}
	}()
	select {
	case <-left:
	case <-sess.CloseChan():
	case <-ctx.Done():
	}
}

func (s *Server) register(dev *developer) error {
	if err := dev.hello.Validate(); err != nil {
		return err
	}
	if !dev.hello.All {
		rule, err := dev.hello.Match.Compile()
		if err != nil {
			return err
		}
		dev.rule = rule
	}
	if !s.hasPort(dev.hello.Port) {
		return fmt.Errorf("the Service has no port %q", dev.hello.Port)
	}
	// The same developer with the same rule again: after a crash or a lost
	// network their earlier tunnel is dead even if it has not timed out here
	// yet, and the new one replaces it; if it still answers, it is a second
	// terminal, which is refused.
	s.mu.RLock()
	var same *developer
	for other := range s.devs {
		if sameHello(other.hello, dev.hello) {
			same = other
		}
	}
	s.mu.RUnlock()
	if same != nil {
		if alive(same.sess) {
			return fmt.Errorf("%s already intercepts port %s with %s from another terminal", same.hello.Developer, dev.hello.Port, dev.hello.Match)
		}
		s.unregister(same)
		same.sess.Close()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for other := range s.devs {
		if other.hello.Port != dev.hello.Port {
			continue
		}
		switch {
		case (other.hello.All || dev.hello.All) && (other.hello.Mirror || dev.hello.Mirror):
			return fmt.Errorf("port %s has an --all intercept and a mirror (%s and %s): the whole port goes to one laptop as plain TCP, so there is nothing to mirror", dev.hello.Port, other.hello.Developer, dev.hello.Developer)
		case other.hello.Mirror || dev.hello.Mirror:
			continue // a mirror takes nothing from anyone
		}
		switch {
		case other.hello.All:
			return fmt.Errorf("port %s is intercepted with --all by %s", dev.hello.Port, other.hello.Developer)
		case dev.hello.All:
			return fmt.Errorf("port %s is already intercepted by %s (%s); --all would take their requests", dev.hello.Port, other.hello.Developer, other.hello.Match)
		case other.hello.Match.Equal(dev.hello.Match):
			return fmt.Errorf("%s already intercepts port %s with %s: choose another value", other.hello.Developer, dev.hello.Port, dev.hello.Match)
		case !wire.Disjoint(other.hello.Match, dev.hello.Match):
			return fmt.Errorf("your rule (%s) can match the same requests as %s's on port %s (%s): make them differ in a header's value, a path prefix or the method", dev.hello.Match, other.hello.Developer, dev.hello.Port, other.hello.Match)
		}
	}
	if dev.hello.Mirror {
		dev.mirror = newMirror(dev)
	}
	s.devs[dev] = true
	return nil
}

// sameHello: the same developer with the same rule.
func sameHello(a, b wire.Hello) bool {
	return a.Developer == b.Developer && a.Port == b.Port && a.All == b.All && a.Mirror == b.Mirror &&
		a.RecordAnswers == b.RecordAnswers && a.Match.Equal(b.Match)
}

// alive pings a tunnel, giving it two seconds to answer.
func alive(sess *yamux.Session) bool {
	done := make(chan error, 1)
	go func() { _, err := sess.Ping(); done <- err }()
	select {
	case err := <-done:
		return err == nil
	case <-time.After(2 * time.Second):
		return false
	}
}

func (s *Server) unregister(dev *developer) {
	s.mu.Lock()
	delete(s.devs, dev)
	s.mu.Unlock()
}

func (s *Server) registered(dev *developer) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.devs[dev]
}

func (s *Server) count() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.devs)
}

func (s *Server) hasPort(name string) bool {
	for _, p := range s.Ports {
		if p.Name == name {
			return true
		}
	}
	return false
}

// hasHeaderRules: a developer joined with a header rule on a port the
// interceptor was not created for; its new connections are parsed as HTTP.
func (s *Server) hasHeaderRules(port string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for dev := range s.devs {
		if dev.hello.Port == port && !dev.hello.All {
			return true
		}
	}
	return false
}

// allDeveloper is the developer taking every connection of a port, if any.
func (s *Server) allDeveloper(port string) *developer {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for dev := range s.devs {
		if dev.hello.Port == port && dev.hello.All {
			return dev
		}
	}
	return nil
}

// match finds the developer whose rule a request matches on a port.
func (s *Server) match(port string, req *http.Request) *developer {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for dev := range s.devs {
		if dev.hello.Port == port && !dev.hello.All && !dev.hello.Mirror && dev.rule.Matches(req) {
			return dev
		}
	}
	return nil
}

// mirrors are the developers who get a copy of a request on a port.
func (s *Server) mirrors(port string, req *http.Request) []*developer {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []*developer
	for dev := range s.devs {
		if dev.hello.Port == port && dev.hello.Mirror && dev.rule.Matches(req) {
			out = append(out, dev)
		}
	}
	return out
}

// servePort dispatches each connection: to the developer taking the whole
// port; through the HTTP router on the intercepted port (so a keep-alive
// connection opened before a developer joined is still routed per request);
// else straight to the decoy, without parsing a byte.
func (s *Server) servePort(ctx context.Context, l net.Listener, p Port) {
	// HTTP/2 connections (gRPC) are served by net/http's HTTP/2 server and
	// a reverse proxy; HTTP/1 by the router in h1.go.
	h2Conns := newChanListener(l.Addr())
	srv := &http.Server{Handler: h2c.NewHandler(s.reverseProxy(p), &http2.Server{IdleTimeout: IdleTimeout}),
		ReadHeaderTimeout: ReadHeaderTimeout, IdleTimeout: IdleTimeout, MaxHeaderBytes: MaxHeaderBytes}
	go func() { _ = srv.Serve(h2Conns) }()
	defer srv.Close()
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		switch all := s.allDeveloper(p.Name); {
		case all != nil:
			go s.pipeToDeveloper(ctx, c, all)
		case p.HTTP || s.hasHeaderRules(p.Name):
			go s.serveHTTP(ctx, c, p, h2Conns)
		default:
			go s.pipeToDecoy(ctx, c, p)
		}
	}
}

func (s *Server) decoyAddr(p Port) string {
	return net.JoinHostPort(s.Decoy, strconv.Itoa(p.DecoyPort))
}

func (s *Server) pipeToDecoy(ctx context.Context, c net.Conn, p Port) {
	up, err := s.decoyDialer.DialContext(ctx, "tcp", s.decoyAddr(p))
	if err != nil {
		s.Log.Warn("decoy unreachable", "addr", s.decoyAddr(p), "err", err)
		c.Close()
		return
	}
	relay.Pipe(c, up)
}

func (s *Server) pipeToDeveloper(ctx context.Context, c net.Conn, dev *developer) {
	up, err := dev.dial(ctx, "tcp", "")
	if err != nil {
		s.Log.Warn("laptop unreachable", "developer", dev.hello.Developer, "err", err)
		c.Close()
		return
	}
	relay.Pipe(c, up)
}

// dial gets a connection to the developer's laptop: a spare port-forward
// stream when one is ready, else a new yamux stream.
func (dev *developer) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	for {
		select {
		case c := <-dev.spare:
			if _, err := c.Write([]byte{wire.PoolGo}); err != nil {
				c.Close() // the laptop let it go: try the next
				continue
			}
			conn, err := dev.awaitStatus(ctx, c)
			var refused *laptopError
			if err != nil && !errors.As(err, &refused) {
				continue // a stale spare: try the next, or the tunnel
			}
			return conn, err
		default:
			st, err := dev.sess.OpenStream()
			if err != nil {
				return nil, fmt.Errorf("the tunnel to %s's laptop is closed: %w", dev.hello.Developer, err)
			}
			return dev.awaitStatus(ctx, st)
		}
	}
}

// awaitStatus reads the laptop's status byte for a new connection.
func (dev *developer) awaitStatus(ctx context.Context, st net.Conn) (net.Conn, error) {
	if deadline, ok := ctx.Deadline(); ok {
		_ = st.SetReadDeadline(deadline)
	} else {
		_ = st.SetReadDeadline(time.Now().Add(30 * time.Second))
	}
	br := bufio.NewReader(st)
	status, err := br.ReadByte()
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("%s's laptop did not answer: %w", dev.hello.Developer, err)
	}
	if status != wire.StreamOK {
		msg, _ := br.ReadString('\n')
		st.Close()
		return nil, &laptopError{fmt.Sprintf("%s's laptop: %s", dev.hello.Developer, trimNL(msg))}
	}
	_ = st.SetReadDeadline(time.Time{})
	return &bufferedConn{Conn: st, r: br}, nil
}

// maxControlBytes bounds what a developer's control stream may send.
const maxControlBytes = 64 << 10

// tokenLen is the size of a developer's token on spare connections.
const tokenLen = 32

func newToken() string {
	b := make([]byte, tokenLen/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func trimNL(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	return s
}

// laptopError is the laptop's own answer that it cannot serve a connection
// (nothing listens on its local port): final, unlike a stale stream.
type laptopError struct{ msg string }

func (e *laptopError) Error() string { return e.msg }

// bufferedConn keeps bytes the status read may have buffered.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// CloseWrite half-closes like the connection it wraps (a TCP connection's
// CloseWrite; a yamux stream's Close is already a half-close).
func (b *bufferedConn) CloseWrite() error {
	if cw, ok := b.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return b.Conn.Close()
}

// routeKey carries the chosen developer from the proxy's Rewrite to its
// Transport.
type routeKey struct{}

// reverseProxy routes each HTTP/2 request (h2c, gRPC) of a port: a matching
// developer's laptop, else the decoy, in HTTP/2 on both legs.
func (s *Server) reverseProxy(p Port) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = s.decoyAddr(p)
			pr.Out.Host = pr.In.Host
			if dev := s.match(p.Name, pr.In); dev != nil {
				pr.Out = pr.Out.WithContext(context.WithValue(pr.Out.Context(), routeKey{}, dev))
			}
		},
		Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
			if dev, _ := r.Context().Value(routeKey{}).(*developer); dev != nil {
				return dev.h2.RoundTrip(r)
			}
			return s.decoyH2.RoundTrip(r)
		}),
		FlushInterval: 0, // streaming responses (gRPC, SSE, unknown length) are flushed at once anyway
		BufferPool:    bufferPool{},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			s.Log.Warn("proxy error", "path", r.URL.Path, "err", err)
			http.Error(w, "kubectl cz intercept: "+err.Error(), http.StatusBadGateway)
		},
	}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// bufferPool lends the reverse proxy its copy buffers.
type bufferPool struct{}

func (bufferPool) Get() []byte  { return relay.Buffer() }
func (bufferPool) Put(b []byte) { relay.Return(b) }

// h2cTransport speaks HTTP/2 without TLS over connections from dial.
func h2cTransport(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http2.Transport {
	return &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return dial(ctx, network, addr)
		},
	}
}

// chanListener hands connections the dispatcher chose for HTTP to an
// http.Server.
type chanListener struct {
	addr  net.Addr
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) push(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, errors.New("listener closed")
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }
