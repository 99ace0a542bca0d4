package interceptor

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kubectl-cz/kubectl-cz/agent/wire"
	"github.com/kubectl-cz/kubectl-cz/relay"
)

// The HTTP/1 router. One goroutine per caller connection reads a request,
// picks its route (a developer's laptop, or the decoy), writes the request
// on that route's connection and copies the answer back. A request costs
// the two network waits a byte relay costs and no hand-offs between
// goroutines; httputil.ReverseProxy behind net/http's server and Transport
// takes about five, which measured +0.4 ms per request in the cluster
// against +0.15 ms for the relay. Like a relay, each caller connection keeps
// its own connection per route, so "Connection: close", upgrades and
// half-closes mean what they meant to the caller.

const h1BufferSize = 32 << 10

var (
	h1Readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, h1BufferSize) }}
	h1Writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, h1BufferSize) }}
)

func newReader(r io.Reader) *bufio.Reader {
	br := h1Readers.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

func newWriter(w io.Writer) *bufio.Writer {
	bw := h1Writers.Get().(*bufio.Writer)
	bw.Reset(w)
	return bw
}

func release(br *bufio.Reader, bw *bufio.Writer) {
	br.Reset(nil)
	bw.Reset(nil)
	h1Readers.Put(br)
	h1Writers.Put(bw)
}

// h2Preface starts every HTTP/2 connection with prior knowledge (gRPC);
// no HTTP/1 method is called PRI.
const h2Preface = "PRI "

// upstream is one route's connection, kept for one caller connection.
type upstream struct {
	conn net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	// used: it has carried a request, so the other end may have closed it
	// while it sat idle.
	used bool
}

func (u *upstream) close() {
	u.conn.Close()
	release(u.br, u.bw)
}

// closedWhileIdle reports whether the other end hung up (or sent something
// nobody asked for) while the connection sat idle.
func (u *upstream) closedWhileIdle() bool {
	if u.br.Buffered() > 0 {
		return true
	}
	c := u.conn
	for { // a spare stream is wrapped twice: token line, then status byte
		b, ok := c.(*bufferedConn)
		if !ok {
			break
		}
		if b.r.Buffered() > 0 {
			return true
		}
		c = b.Conn
	}
	if sc, ok := c.(syscall.Conn); ok {
		// A TCP connection: peek without waiting (Go does not even try a
		// read whose deadline has passed).
		raw, err := sc.SyscallConn()
		if err != nil {
			return true
		}
		closed := true
		_ = raw.Read(func(fd uintptr) bool {
			var buf [1]byte
			n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			closed = n > 0 || err != syscall.EAGAIN
			return true
		})
		return closed
	}
	// A yamux stream reports its end before it looks at the deadline.
	_ = c.SetReadDeadline(time.Unix(1, 0))
	_, err := c.Read(make([]byte, 1))
	_ = c.SetReadDeadline(time.Time{})
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// h1Conn is one caller connection on an HTTP-routed port.
type h1Conn struct {
	s      *Server
	port   Port
	conn   net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	routes map[*developer]*upstream // nil: the decoy
	watch  callerWatch
}

// serveHTTP routes the requests of one caller connection until it closes.
// HTTP/2 with prior knowledge goes to h2, the HTTP/2 server.
func (s *Server) serveHTTP(ctx context.Context, c net.Conn, p Port, h2 *chanListener) {
	// Callers are anyone on the pod network: a request's head is read
	// within a budget of bytes and time, as net/http's server does.
	budget := &budgetReader{r: c, n: MaxHeaderBytes}
	br := newReader(budget)
	_ = c.SetReadDeadline(time.Now().Add(IdleTimeout))
	if b, err := br.Peek(len(h2Preface)); err == nil && string(b) == h2Preface {
		_ = c.SetReadDeadline(time.Time{})
		budget.unlimited()
		h2.push(&bufferedConn{Conn: c, r: br}) // its reader now belongs to the HTTP/2 server
		return
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	hc := &h1Conn{s: s, port: p, conn: c, br: br, bw: newWriter(c), routes: map[*developer]*upstream{}}
	defer func() {
		for _, u := range hc.routes {
			u.close()
		}
		c.Close()
		release(hc.br, hc.bw)
	}()
	for {
		budget.n = MaxHeaderBytes
		_ = c.SetReadDeadline(time.Now().Add(IdleTimeout))
		if _, err := br.Peek(1); err != nil {
			return // closed, or idle too long
		}
		_ = c.SetReadDeadline(time.Now().Add(ReadHeaderTimeout))
		req, err := http.ReadRequest(br)
		_ = c.SetReadDeadline(time.Time{})
		budget.unlimited()
		if err != nil {
			var ne net.Error
			switch {
			case errors.Is(err, errHeadTooLarge):
				hc.fail(http.StatusRequestHeaderFieldsTooLarge, "request head larger than "+fmt.Sprint(MaxHeaderBytes)+" bytes")
			case errors.As(err, &ne) && ne.Timeout():
				hc.fail(http.StatusRequestTimeout, "request head not received within "+ReadHeaderTimeout.String())
			case !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, syscall.ECONNRESET):
				hc.fail(http.StatusBadRequest, "bad request: "+err.Error())
			}
			return
		}
		if !hc.serve(ctx, req) {
			return
		}
	}
}

// Limits on what a caller may send before its request is routed.
const (
	// MaxHeaderBytes bounds a request's line and headers (net/http's default).
	MaxHeaderBytes = 1 << 20
	// ReadHeaderTimeout bounds the time from a request's first byte to the
	// end of its headers.
	ReadHeaderTimeout = 30 * time.Second
	// IdleTimeout closes a caller connection that sends no request for so
	// long (client pools keep idle connections 90 s at most by default).
	IdleTimeout = 5 * time.Minute
)

var errHeadTooLarge = errors.New("request head too large")

// budgetReader reads at most n bytes, then fails with errHeadTooLarge.
type budgetReader struct {
	r io.Reader
	n int64
}

func (b *budgetReader) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, errHeadTooLarge
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.r.Read(p)
	b.n -= int64(n)
	return n, err
}

func (b *budgetReader) unlimited() { b.n = math.MaxInt64 }

// serve forwards one request and its answer; false: close the connection.
func (hc *h1Conn) serve(ctx context.Context, req *http.Request) bool {
	if hc.s.isProbe(req.Header) {
		fmt.Fprintf(hc.bw, "HTTP/1.1 204 No Content\r\n%s: seen\r\nConnection: close\r\n\r\n", wire.ProbeHeader)
		_ = hc.bw.Flush()
		return false
	}
	prepare(req)
	expectContinue := strings.EqualFold(req.Header.Get("Expect"), "100-continue")
	if expectContinue {
		// Answered here, when the body is first read, as net/http's server
		// does; the next hop gets the body without asking.
		req.Header.Del("Expect")
	}
	dev := hc.s.match(hc.port.Name, req)
	hc.forget(dev)
	mirrors := hc.s.mirrors(hc.port.Name, req)
	var copied *mirrorCopy
	var kept *keptBody
	if len(mirrors) > 0 {
		copied, kept = copyOf(req)
	}
	resp, up, err := hc.roundTrip(ctx, req, dev, expectContinue)
	// The copy leaves once the original's body has passed, or, for a
	// mirror that records the cluster's answers, once the answer has too.
	var answer *keptBody
	if len(mirrors) > 0 && err == nil {
		if recordsAnswers(mirrors) && resp.StatusCode != http.StatusSwitchingProtocols {
			answer = &keptBody{ReadCloser: resp.Body}
			if resp.Body == http.NoBody {
				answer.done = true
			} else {
				resp.Body = answer
			}
			defer func() { copied.answer = encodeAnswer(resp, answer); finish(copied, kept, mirrors) }()
		} else {
			finish(copied, kept, mirrors)
		}
	}
	defer hc.watch.stop()
	if err != nil {
		hc.s.Log.Warn("proxy error", "path", req.URL.Path, "err", err)
		hc.fail(http.StatusBadGateway, "kubectl cz intercept: "+err.Error())
		return false
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// WebSocket and other upgrades: answer, then relay bytes both ways.
		hc.watch.stop()
		delete(hc.routes, dev)
		defer up.close()
		if err := resp.Write(hc.bw); err != nil || hc.bw.Flush() != nil {
			up.conn.Close()
			return false
		}
		relay.Pipe(&bufferedConn{Conn: hc.conn, r: hc.br}, &bufferedConn{Conn: up.conn, r: up.br})
		return false
	}
	if !req.ProtoAtLeast(1, 1) {
		// An HTTP/1.0 caller knows no chunks: the end of the body is the
		// end of the connection.
		resp.TransferEncoding = nil
		resp.Close = true
	}
	if resp.Body != http.NoBody {
		resp.Body = &flushingBody{ReadCloser: resp.Body, src: up.br, dst: hc.bw, always: resp.ContentLength < 0}
	}
	err = resp.Write(plainWriter{hc.bw})
	if err == nil {
		err = hc.bw.Flush()
	}
	if err != nil || resp.Close {
		delete(hc.routes, dev)
		up.close()
		return false
	}
	return !req.Close
}

// prepare makes the request ready to be written on: Request.Write would add
// Go's User-Agent to a request that had none, and the "Upgrade: h2c" dance
// is refused by dropping its headers, so the request goes on as HTTP/1.1,
// which every backend speaks.
func prepare(req *http.Request) {
	if _, ok := req.Header["User-Agent"]; !ok {
		req.Header["User-Agent"] = []string{""}
	}
	if strings.EqualFold(req.Header.Get("Upgrade"), "h2c") {
		req.Header.Del("Upgrade")
		req.Header.Del("Http2-Settings")
		if strings.EqualFold(req.Header.Get("Connection"), "Upgrade, HTTP2-Settings") {
			req.Header.Del("Connection")
		}
	}
}

// forget closes connections to developers who left since they were opened.
func (hc *h1Conn) forget(current *developer) {
	if len(hc.routes) < 2 {
		return
	}
	for dev, u := range hc.routes {
		if dev != nil && dev != current && !hc.s.registered(dev) {
			u.close()
			delete(hc.routes, dev)
		}
	}
}

// roundTrip writes the request on the route's connection and reads the
// answer, passing informational (1xx) answers on to the caller.
func (hc *h1Conn) roundTrip(ctx context.Context, req *http.Request, dev *developer, expectContinue bool) (*http.Response, *upstream, error) {
	hasBody := req.Body != http.NoBody
	for attempt := 0; ; attempt++ {
		up, err := hc.route(ctx, dev, hasBody)
		if err != nil {
			return nil, nil, err
		}
		reused := up.used
		up.used = true
		if hasBody {
			body := &flushingBody{ReadCloser: req.Body, src: hc.br, dst: up.bw, always: req.ContentLength < 0}
			if expectContinue {
				body.first = func() error {
					_, err := hc.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
					if err == nil {
						err = hc.bw.Flush()
					}
					return err
				}
			}
			req.Body = body
		}
		err = req.Write(plainWriter{up.bw})
		if err == nil {
			err = up.bw.Flush()
		}
		var resp *http.Response
		if err == nil {
			hc.watch.start(hc, up)
			resp, err = hc.readResponse(up, req)
		}
		if err == nil {
			return resp, up, nil
		}
		hc.watch.stop()
		delete(hc.routes, dev)
		up.close()
		// A kept connection the other end closed while it was idle: a
		// request without a body is sent again, on a new connection.
		if !reused || hasBody || attempt > 0 || !closedBeforeAnswer(err) {
			return nil, nil, err
		}
	}
}

func closedBeforeAnswer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// route is the caller connection's connection to a developer's laptop, or
// to the decoy for dev nil, dialed the first time it is needed.
func (hc *h1Conn) route(ctx context.Context, dev *developer, hasBody bool) (*upstream, error) {
	if up := hc.routes[dev]; up != nil {
		// A body cannot be sent twice: check first that the connection is
		// still there.
		if !hasBody || !up.closedWhileIdle() {
			return up, nil
		}
		delete(hc.routes, dev)
		up.close()
	}
	var conn net.Conn
	var err error
	if dev != nil {
		conn, err = dev.dial(ctx, "tcp", "")
	} else {
		addr := hc.s.decoyAddr(hc.port)
		if conn, err = hc.s.decoyDialer.DialContext(ctx, "tcp", addr); err != nil {
			err = fmt.Errorf("the original pods (decoy %s) are unreachable: %w", addr, err)
		}
	}
	if err != nil {
		return nil, err
	}
	up := &upstream{conn: conn, br: newReader(conn), bw: newWriter(conn)}
	hc.routes[dev] = up
	return up, nil
}

// readResponse reads the final answer to req, passing informational ones
// (103 Early Hints, a backend's own 100 Continue) to the caller as they come.
func (hc *h1Conn) readResponse(up *upstream, req *http.Request) (*http.Response, error) {
	for {
		// ReadResponse reports an EOF before the first byte as an
		// unexpected one: peek first to tell a connection closed while idle.
		if _, err := up.br.Peek(1); err != nil {
			return nil, err
		}
		resp, err := http.ReadResponse(up.br, req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			return resp, nil
		}
		fmt.Fprintf(hc.bw, "HTTP/1.1 %s\r\n", resp.Status)
		_ = resp.Header.Write(hc.bw)
		_, _ = hc.bw.WriteString("\r\n")
		if err := hc.bw.Flush(); err != nil {
			return nil, err
		}
	}
}

// slowAnswer is how long an answer may take before the agent watches
// whether its caller is still there.
const slowAnswer = 100 * time.Millisecond

// callerWatch notices a caller that hangs up while its answer is pending (a
// long poll, an endless event stream): the route's connection is closed, so
// the backend sees the caller leave and the wait here ends. Only answers
// slower than slowAnswer pay for the extra goroutine; the caller connection
// is not read from anywhere else meanwhile, as the request was sent whole.
type callerWatch struct {
	mu      sync.Mutex
	timer   *time.Timer // reused: one per caller connection
	stopped bool
	hc      *h1Conn
	up      *upstream
	done    chan struct{} // the watching goroutine ended
}

func (w *callerWatch) start(hc *h1Conn, up *upstream) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped, w.done, w.hc, w.up = false, nil, hc, up
	if w.timer == nil {
		w.timer = time.AfterFunc(slowAnswer, w.fire)
		return
	}
	w.timer.Reset(slowAnswer)
}

// fire starts the watching goroutine, unless the answer came meanwhile. A
// late fire from an earlier request watches the current one, a little early.
func (w *callerWatch) fire() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped || w.done != nil {
		return
	}
	done, hc, up := make(chan struct{}), w.hc, w.up
	w.done = done
	go func() {
		defer close(done)
		var ne net.Error
		if _, err := hc.br.Peek(1); err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
			up.conn.Close()
		}
	}()
}

// stop ends the watch, interrupting its read, before the caller connection
// is read again. Stopping twice, or without a start, does nothing.
func (w *callerWatch) stop() {
	w.mu.Lock()
	if w.timer == nil || w.stopped {
		w.mu.Unlock()
		return
	}
	w.stopped = true
	w.timer.Stop()
	done, caller := w.done, w.hc.conn
	w.mu.Unlock()
	if done != nil {
		_ = caller.SetReadDeadline(time.Unix(1, 0))
		<-done
		_ = caller.SetReadDeadline(time.Time{})
	}
}

// fail answers the caller with an error and asks it to close the connection.
func (hc *h1Conn) fail(code int, msg string) {
	msg += "\n"
	fmt.Fprintf(hc.bw, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		code, http.StatusText(code), len(msg), msg)
	_ = hc.bw.Flush()
}

// flushingBody flushes what was written to dst before a read of src could
// wait on the network, so a streamed body (server-sent events, a slow
// upload) moves as it comes, while a body that has already arrived leaves in
// one write with its head. A chunked or unsized body is flushed before every
// read: a chunk header may have arrived only in part.
type flushingBody struct {
	io.ReadCloser
	src    *bufio.Reader
	dst    *bufio.Writer
	always bool
	first  func() error // before the first read (100 Continue)
}

func (b *flushingBody) Read(p []byte) (int, error) {
	if b.first != nil {
		first := b.first
		b.first = nil
		if err := first(); err != nil {
			return 0, err
		}
	}
	if b.always || b.src.Buffered() == 0 {
		if err := b.dst.Flush(); err != nil {
			return 0, err
		}
	}
	return b.ReadCloser.Read(p)
}

// plainWriter hides bufio.Writer's ReadFrom, which reads into the writer's
// own buffer: a flushingBody flushing that buffer from inside the read would
// corrupt it. net/http's body copy then uses its own pooled buffer.
type plainWriter struct{ w *bufio.Writer }

func (p plainWriter) Write(b []byte) (int, error)       { return p.w.Write(b) }
func (p plainWriter) WriteString(s string) (int, error) { return p.w.WriteString(s) }

// WriteByte keeps Request.Write from wrapping the writer in a bufio.Writer
// of its own.
func (p plainWriter) WriteByte(c byte) error { return p.w.WriteByte(c) }
