// Package record writes the requests an intercept takes, with the answers
// they got, to a file as they pass (kubectl cz intercept --record), and
// sends them again to a local build, showing where its answers differ
// (kubectl cz replay). HTTP/1.1; a connection in any other protocol is
// relayed as before and not recorded.
package record

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/kubectl-cz/kubectl-cz/agent/wire"
)

// maxBody is what a record keeps of a body; a longer one is cut and marked.
const maxBody = 1 << 20

// Entry is one request and its answer, a line of the file.
type Entry struct {
	Time    time.Time `json:"time"`
	Request Message   `json:"request"`
	Answer  Message   `json:"answer"`
	// From says whose answer it is: "laptop", or "cluster" for a mirror's
	// copy (the laptop's answer to it was dropped).
	From string `json:"from"`
}

// Message is a request (Method, URI, Host) or an answer (Status).
type Message struct {
	Method    string      `json:"method,omitempty"`
	URI       string      `json:"uri,omitempty"`
	Host      string      `json:"host,omitempty"`
	Status    int         `json:"status,omitempty"`
	Header    http.Header `json:"header"`
	Body      []byte      `json:"body,omitempty"`
	Truncated bool        `json:"truncated,omitempty"`
}

// Secret headers are written as Redacted unless the recorder keeps them.
var secretHeaders = []string{"Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie"}

// Redacted stands for a secret header's value.
const Redacted = "REDACTED"

// Recorder appends entries to a file.
type Recorder struct {
	mu      sync.Mutex
	f       *os.File
	secrets bool
	written int
	lost    int
}

// Create starts a recording at path (replaced), 0600: requests may carry
// personal data even without their secrets.
func Create(path string, keepSecrets bool) (*Recorder, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("record: %w", err)
	}
	if err := f.Chmod(0o600); err != nil { // a file that was there keeps its mode otherwise
		f.Close()
		return nil, fmt.Errorf("record: %w", err)
	}
	return &Recorder{f: f, secrets: keepSecrets}, nil
}

// Close ends the recording and says how many entries it holds and how
// many connections could not be recorded whole.
func (r *Recorder) Close() (written, lost int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.written, r.lost, r.f.Close()
}

func (r *Recorder) add(e Entry) {
	if !r.secrets {
		for _, m := range []*Message{&e.Request, &e.Answer} {
			for _, h := range secretHeaders {
				if _, ok := m.Header[h]; ok {
					m.Header[h] = []string{Redacted}
				}
			}
		}
	}
	b, err := json.Marshal(e)
	if err != nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := r.f.Write(append(b, '\n')); err == nil {
		r.written++
	}
}

func (r *Recorder) loseOne() {
	r.mu.Lock()
	r.lost++
	r.mu.Unlock()
}

// Conns wraps a relayed connection's two sides (the agent's stream, which
// brings requests, and the local one, which answers) so that what they
// read is also parsed and recorded. Recording never holds the relay up:
// if the parser falls behind, that connection stops being recorded.
func (r *Recorder) Conns(agent, local net.Conn) (net.Conn, net.Conn) {
	reqs, answers := newChunks(), newChunks()
	go r.parse(reqs, answers)
	return &teeConn{Conn: agent, to: reqs}, &teeConn{Conn: local, to: answers}
}

// parse pairs each request with the answer that follows it, in order.
func (r *Recorder) parse(reqs, answers *chunks) {
	defer reqs.stop()
	defer answers.stop()
	rb, ab := bufio.NewReader(reqs), bufio.NewReader(answers)
	for {
		req, err := http.ReadRequest(rb)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				r.loseOne()
			}
			return
		}
		e := Entry{Time: time.Now().UTC(), From: "laptop", Request: Message{Method: req.Method, URI: req.RequestURI, Host: req.Host, Header: req.Header}}
		e.Request.Body, e.Request.Truncated = readBody(req.Body)
		resp, err := http.ReadResponse(ab, req)
		if err != nil {
			r.loseOne()
			return
		}
		e.Answer = Message{Status: resp.StatusCode, Header: resp.Header}
		e.Answer.Body, e.Answer.Truncated = readBody(resp.Body)
		r.add(e)
		if resp.StatusCode == http.StatusSwitchingProtocols {
			return // an upgrade: no more HTTP on this connection
		}
	}
}

func readBody(body io.ReadCloser) ([]byte, bool) {
	defer body.Close()
	b, _ := io.ReadAll(io.LimitReader(body, maxBody))
	n, _ := io.Copy(io.Discard, body)
	return b, n > 0
}

// ServeMirror serves a mirror's copies arriving on agent (each carrying
// the cluster's answer in wire.MirrorAnswerHeader) to local, records each
// with the cluster's answer, and takes the header off before the local
// server sees the copy.
func (r *Recorder) ServeMirror(agent, local net.Conn) {
	defer agent.Close()
	defer local.Close()
	ab, lb := bufio.NewReader(agent), bufio.NewReader(local)
	for {
		req, err := http.ReadRequest(ab)
		if err != nil {
			return
		}
		e := Entry{Time: time.Now().UTC(), From: "cluster", Request: Message{Method: req.Method, URI: req.RequestURI, Host: req.Host}}
		raw := req.Header.Get(wire.MirrorAnswerHeader)
		req.Header.Del(wire.MirrorAnswerHeader)
		e.Request.Header = req.Header.Clone()
		var body []byte
		body, e.Request.Truncated = readBody(req.Body)
		e.Request.Body = body
		if a, err := wire.DecodeAnswer(raw); err == nil && raw != "" {
			e.Answer = Message{Status: a.Status, Header: a.Header, Body: a.Body, Truncated: a.Truncated}
		} else {
			r.loseOne()
		}
		out, err := http.NewRequest(req.Method, req.RequestURI, bytes.NewReader(body))
		if err != nil {
			return
		}
		out.Header, out.Host = req.Header, req.Host
		// The agent gives up on a copy after 30 s: so does this.
		_ = local.SetDeadline(time.Now().Add(30 * time.Second))
		if err := out.Write(local); err != nil {
			return
		}
		resp, err := http.ReadResponse(lb, out)
		if err != nil {
			return
		}
		err = resp.Write(agent)
		resp.Body.Close()
		if e.Answer.Status != 0 {
			r.add(e)
		}
		if err != nil || resp.Close {
			return
		}
	}
}

// teeConn passes what it reads on to a parser as well.
type teeConn struct {
	net.Conn
	to *chunks
}

func (c *teeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.to.put(p[:n])
	}
	if err != nil {
		c.to.end()
	}
	return n, err
}

func (c *teeConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// chunks is a pipe that never blocks its writer: a chunk that finds it
// full breaks it, and the reader then gets an error.
type chunks struct {
	ch     chan []byte
	mu     sync.Mutex
	closed bool
	cur    []byte
	broken bool
}

func newChunks() *chunks { return &chunks{ch: make(chan []byte, 256)} }

func (c *chunks) put(p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	select {
	case c.ch <- append([]byte(nil), p...):
	default:
		c.broken, c.closed = true, true
		close(c.ch)
	}
}

func (c *chunks) end() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed = true
		close(c.ch)
	}
}

// stop is the reader giving up: later chunks are dropped.
func (c *chunks) stop() {
	c.end()
	for range c.ch {
	}
}

func (c *chunks) Read(p []byte) (int, error) {
	for len(c.cur) == 0 {
		b, ok := <-c.ch
		if !ok {
			c.mu.Lock()
			broken := c.broken
			c.mu.Unlock()
			if broken {
				return 0, errors.New("the recording fell behind")
			}
			return 0, io.EOF
		}
		c.cur = b
	}
	n := copy(p, c.cur)
	c.cur = c.cur[n:]
	return n, nil
}
