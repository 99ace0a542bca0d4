package interceptor

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/kubectl-cz/kubectl-cz/agent/wire"
)

// Mirror: a developer with Hello.Mirror gets a copy of each request their
// rule matches while the cluster answers it as before. The copy never
// delays or fails the original: the body is kept as it passes (up to
// maxMirrorBody), the copy is queued once the original is on its way, and
// a full queue drops it (counted, reported at Leave).

const (
	// maxMirrorBody: a larger body is not copied (the copy is dropped).
	maxMirrorBody = 1 << 20
	// mirrorQueue copies wait per developer; more are dropped.
	mirrorQueue = 1024
	// mirrorWorkers send one developer's copies at once.
	mirrorWorkers = 8
	// mirrorBytes bounds the bytes of one developer's queued copies: a
	// slow laptop must not take the agent's memory from the real traffic.
	mirrorBytes = 64 << 20
)

// mirrorCopy is a request to send again to a mirror's laptop.
type mirrorCopy struct {
	method, uri, host string
	header            http.Header
	body              []byte
	// answer is the cluster's answer (wire.EncodeAnswer), for mirrors that
	// record it.
	answer string
}

// mirror is a developer's copies: queued, sent, dropped.
type mirror struct {
	queue         chan *mirrorCopy
	sent, dropped atomic.Int64
	busy          atomic.Int32 // copies queued or being sent
	bytes         atomic.Int64 // their size
	stop          context.CancelFunc
}

func newMirror(dev *developer) *mirror {
	ctx, cancel := context.WithCancel(context.Background())
	m := &mirror{queue: make(chan *mirrorCopy, mirrorQueue), stop: cancel}
	for i := 0; i < mirrorWorkers; i++ {
		go m.send(ctx, dev)
	}
	return m
}

// drain waits, up to limit, for the copies queued to be sent, so the
// counts a Leave reports are final.
func (m *mirror) drain(limit time.Duration) {
	deadline := time.Now().Add(limit)
	for m.busy.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

// offer queues a copy, or drops it when the queue is full.
func (m *mirror) offer(c *mirrorCopy) {
	size := c.size()
	if m.bytes.Add(size) > mirrorBytes {
		m.bytes.Add(-size)
		m.dropped.Add(1)
		return
	}
	m.busy.Add(1)
	select {
	case m.queue <- c:
	default:
		m.busy.Add(-1)
		m.bytes.Add(-size)
		m.dropped.Add(1)
	}
}

func (c *mirrorCopy) size() int64 { return int64(len(c.body) + len(c.answer) + len(c.uri) + 1024) }

// send writes each copy to the laptop and reads (and drops) its answer,
// on a connection kept from one copy to the next (a new stream per copy
// sent two thirds of 1,000 copies a second).
func (m *mirror) send(ctx context.Context, dev *developer) {
	var conn net.Conn
	var br *bufio.Reader
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for {
		var c *mirrorCopy
		select {
		case <-ctx.Done():
			return
		case c = <-m.queue:
		}
		ok := false
		for attempt := 0; attempt < 2 && !ok; attempt++ {
			if conn == nil {
				dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				var err error
				conn, err = dev.dial(dctx, "tcp", "")
				cancel()
				if err != nil {
					conn = nil
					break
				}
				br = bufio.NewReader(conn)
			}
			var reusable bool
			ok, reusable = deliver(conn, br, c, dev.hello.RecordAnswers)
			if !reusable {
				conn.Close() // closed by the local server (while idle: once more on a new one)
				conn = nil
			}
		}
		if ok {
			m.sent.Add(1)
		} else {
			m.dropped.Add(1)
		}
		m.bytes.Add(-c.size())
		m.busy.Add(-1)
	}
}

// deliver writes one copy on conn and reads its answer: delivered once
// an answer came; reusable while the connection may carry the next.
func deliver(conn net.Conn, br *bufio.Reader, c *mirrorCopy, withAnswer bool) (delivered, reusable bool) {
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	req, err := http.NewRequest(c.method, c.uri, bytes.NewReader(c.body))
	if err != nil {
		return false, true
	}
	req.Header, req.Host, req.RequestURI = c.header, c.host, ""
	if withAnswer && c.answer != "" {
		req.Header = c.header.Clone()
		req.Header.Set(wire.MirrorAnswerHeader, c.answer)
	}
	if err := req.Write(conn); err != nil {
		return false, false
	}
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return false, false
	}
	// An answer longer than this is not read to its end: then the
	// connection cannot carry the next copy.
	n, err := io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<20+1))
	resp.Body.Close()
	return true, err == nil && n <= 64<<20 && !resp.Close
}

// keptBody passes a request's body on and keeps a copy of it, up to
// maxMirrorBody.
type keptBody struct {
	io.ReadCloser
	buf    bytes.Buffer
	tooBig bool
	done   bool // the whole body passed
}

func (k *keptBody) Read(p []byte) (int, error) {
	n, err := k.ReadCloser.Read(p)
	if !k.tooBig {
		if k.buf.Len()+n > maxMirrorBody {
			k.tooBig = true
			k.buf = bytes.Buffer{}
		} else {
			k.buf.Write(p[:n])
		}
	}
	if err == io.EOF {
		k.done = true
	}
	return n, err
}

// recordsAnswers: one of the mirrors records the cluster's answers.
func recordsAnswers(mirrors []*developer) bool {
	for _, dev := range mirrors {
		if dev.hello.RecordAnswers {
			return true
		}
	}
	return false
}

// encodeAnswer is the cluster's answer as it passed (its body as far as
// it was kept).
func encodeAnswer(resp *http.Response, body *keptBody) string {
	return wire.EncodeAnswer(wire.MirrorAnswer{Status: resp.StatusCode, Header: resp.Header, Body: body.buf.Bytes(), Truncated: body.tooBig || !body.done})
}

// copyOf starts the copy of a request for its mirrors; the body is kept
// as the original is sent (finish then queues it).
func copyOf(req *http.Request) (*mirrorCopy, *keptBody) {
	c := &mirrorCopy{method: req.Method, uri: req.URL.RequestURI(), host: req.Host, header: req.Header.Clone()}
	if req.Body == nil || req.Body == http.NoBody {
		return c, nil
	}
	k := &keptBody{ReadCloser: req.Body}
	req.Body = k
	return c, k
}

// finish queues the copy for each mirror, once the original's body has
// passed; a body too large or cut short drops it.
func finish(c *mirrorCopy, k *keptBody, mirrors []*developer) {
	if k != nil {
		if k.tooBig || !k.done {
			for _, dev := range mirrors {
				dev.mirror.dropped.Add(1)
			}
			return
		}
		c.body = k.buf.Bytes()
	}
	for _, dev := range mirrors {
		dev.mirror.offer(c)
	}
}
