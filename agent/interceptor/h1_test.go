package interceptor_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kubectl-cz/kubectl-cz/agent/interceptor"
	"github.com/kubectl-cz/kubectl-cz/agent/wire"
	"github.com/kubectl-cz/kubectl-cz/intercept"
)

// rawConn speaks HTTP/1 by hand to the agent, to send what net/http's
// client would not (HTTP/1.0, no User-Agent, Expect without waiting).
func rawConn(t *testing.T, r rig) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(r.listen))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

// A streamed answer reaches the caller while the backend is still writing:
// chunked (server-sent events) and with a Content-Length.
func TestStreamedAnswersAreNotHeldBack(t *testing.T) {
	release, gone := make(chan struct{}), make(chan string, 2)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/sized" {
			w.Header().Set("Content-Length", "10")
		}
		io.WriteString(w, "first")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			gone <- r.URL.Path
		}
		io.WriteString(w, "later")
	}))
	defer backend.Close()
	defer close(release)
	r := startAgent(t, backend)
	for _, path := range []string{"/events", "/sized"} {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", r.listen, path))
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan string, 1)
		go func() {
			b := make([]byte, 5)
			_, err := io.ReadFull(resp.Body, b)
			got <- string(b) + fmt.Sprint(err)
		}()
		select {
		case s := <-got:
			if s != "first<nil>" {
				t.Fatalf("%s: %q", path, s)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: the first part was held back while the backend waited", path)
		}
		// The caller hangs up mid-answer: the backend sees it go.
		resp.Body.Close()
		select {
		case p := <-gone:
			if p != path {
				t.Fatalf("%s: the backend saw %s go", path, p)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: the backend still streams to a caller that left", path)
		}
	}
}

// Expect: 100-continue is answered by the agent when it reads the body.
func TestExpectContinue(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "got %s expect=%q", b, r.Header.Get("Expect"))
	}))
	defer backend.Close()
	c, br := rawConn(t, startAgent(t, backend))
	io.WriteString(c, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	line, err := br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("before the body: %q %v", line, err)
	}
	br.ReadString('\n') // the blank line ending the 100
	io.WriteString(c, "hello")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if string(b) != `got hello expect=""` {
		t.Fatalf("%q", b)
	}
}

// HTTP/1.0 callers get a body they can read (no chunks), ended by the close;
// a request without User-Agent gets none added on the way.
func TestHTTP10AndNoUserAgent(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ua="+strconv.Quote(r.UserAgent()))
		w.(http.Flusher).Flush() // forces chunks towards an HTTP/1.1 peer
		io.WriteString(w, " done")
	}))
	defer backend.Close()
	c, br := rawConn(t, startAgent(t, backend))
	io.WriteString(c, "GET / HTTP/1.0\r\nHost: x\r\n\r\n")
	all, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	head, body, _ := strings.Cut(string(all), "\r\n\r\n")
	if body != `ua="" done` || strings.Contains(strings.ToLower(head), "chunked") {
		t.Fatalf("answer to HTTP/1.0:\n%s", all)
	}
}

// One keep-alive connection is routed request by request, also when it was
// opened before the developer joined; HEAD answers keep the connection usable.
func TestKeepAliveConnectionRoutedPerRequest(t *testing.T) {
	decoy, alice := named("decoy"), named("alice")
	defer decoy.Close()
	defer alice.Close()
	r := startAgent(t, decoy)
	url := fmt.Sprintf("http://127.0.0.1:%d/", r.listen)
	var conns int
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	client.Transport.(*http.Transport).DialContext = func(ctx context.Context, n, a string) (net.Conn, error) {
		conns++
		var d net.Dialer
		return d.DialContext(ctx, n, a)
	}
	if _, body := get(t, client, url, "x-cz-intercept", "alice"); body != "decoy HTTP/1.1" {
		t.Fatalf("before joining: %q", body)
	}
	tun := join(t, r, wire.Hello{Developer: "alice", Port: "http", Match: wire.Match{Header: "x-cz-intercept", Value: "alice"}}, alice.Listener.Addr().String())
	for i := 0; i < 20; i++ {
		h, want := []string(nil), "decoy"
		if i%2 == 0 {
			h, want = []string{"x-cz-intercept", "alice"}, "alice"
		}
		if i%5 == 0 {
			req, _ := http.NewRequest(http.MethodHead, url, nil)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
		if _, body := get(t, client, url, h...); body != want+" HTTP/1.1" {
			t.Fatalf("request %d: %q, want %s", i, body, want)
		}
	}
	// After alice leaves, her header reaches the original pods again, on the
	// same connection.
	if _, err := tun.Leave(); err != nil {
		t.Fatal(err)
	}
	if _, body := get(t, client, url, "x-cz-intercept", "alice"); body != "decoy HTTP/1.1" {
		t.Fatalf("after leaving: %q", body)
	}
	if conns != 1 {
		t.Fatalf("the client opened %d connections, want 1", conns)
	}
}

// A backend that closes idle keep-alive connections, the original pods or a
// developer's local server (Node.js closes them after 5 s): the next
// request, with or without a body, goes on a new connection instead of
// failing.
func TestBackendClosingIdleConnections(t *testing.T) {
	for _, route := range []string{"decoy", "laptop, spare stream", "laptop, yamux stream"} {
		laptop := route != "decoy"
		backend := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%s %d", r.Method, len(b))
		}))
		backend.Config.IdleTimeout = 20 * time.Millisecond
		backend.Start()
		defer backend.Close()
		decoy := backend
		var header []string
		if laptop {
			decoy = named("decoy")
			defer decoy.Close()
		}
		r := startAgent(t, decoy)
		hello := wire.Hello{Developer: "alice", Port: "http", Match: wire.Match{Header: "x-cz-intercept", Value: "alice"}}
		switch route {
		case "laptop, spare stream":
			join(t, r, hello, backend.Listener.Addr().String())
		case "laptop, yamux stream":
			c := dialControl(t, r.controlAddr())
			tun, err := intercept.Register(c, hello, backend.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer tun.Close()
			go tun.Serve(context.Background())
		}
		if laptop {
			header = []string{"x-cz-intercept", "alice"}
		}
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
		for i := 0; i < 6; i++ {
			time.Sleep(60 * time.Millisecond) // past the backend's idle timeout
			method, body, want := http.MethodGet, "", "GET 0"
			if i%2 == 1 {
				method, body, want = http.MethodPost, "payload", "POST 7"
			}
			req, _ := http.NewRequest(method, fmt.Sprintf("http://127.0.0.1:%d/", r.listen), strings.NewReader(body))
			for j := 0; j+1 < len(header); j += 2 {
				req.Header.Set(header[j], header[j+1])
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("%s, request %d: %v", route, i, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != want {
				t.Fatalf("%s, request %d: %q, want %q", route, i, b, want)
			}
		}
	}
}

// Bodies of any size and framing cross intact, both ways.
func TestBodiesCrossIntact(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		w.Header().Set("X-Sum", fmt.Sprintf("%x %d", h.Sum(nil), n))
		size, _ := strconv.Atoi(r.URL.Query().Get("size"))
		w.Write(pattern(size))
	}))
	defer backend.Close()
	r := startAgent(t, backend)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}}
	for _, size := range []int{0, 1, 4 << 10, 1 << 20, 8 << 20} {
		up := bytes.Repeat([]byte("u"), size)
		for _, chunked := range []bool{false, true} {
			var body io.Reader = bytes.NewReader(up)
			if chunked {
				body = io.MultiReader(body) // unknown length: sent in chunks
			}
			req, _ := http.NewRequest(http.MethodPut, fmt.Sprintf("http://127.0.0.1:%d/?size=%d", r.listen, size), body)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.New()
			n, _ := io.Copy(h, resp.Body)
			resp.Body.Close()
			want := sha256.Sum256(up)
			if got := resp.Header.Get("X-Sum"); got != fmt.Sprintf("%x %d", want, size) {
				t.Fatalf("upload of %d (chunked %v) arrived as %s", size, chunked, got)
			}
			wantDown := sha256.Sum256(pattern(size))
			if n != int64(size) || !bytes.Equal(h.Sum(nil), wantDown[:]) {
				t.Fatalf("download of %d arrived with %d bytes or a wrong sum", size, n)
			}
		}
	}
}

// pattern is n varying bytes.
func pattern(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7 + i>>8)
	}
	return p
}

// An upgrade (WebSocket's mechanism) turns the connection into a byte relay
// to the backend that accepted it.
func TestUpgradeRelaysBytes(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "want Upgrade: echo", http.StatusBadRequest)
			return
		}
		c, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		io.Copy(c, brw)
	}))
	defer backend.Close()
	c, br := rawConn(t, startAgent(t, backend))
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("%v %v", resp, err)
	}
	for _, msg := range []string{"ping\n", "pong\n"} {
		io.WriteString(c, msg)
		if got, err := br.ReadString('\n'); got != msg {
			t.Fatalf("echo: %q %v", got, err)
		}
	}
}

// Garbage gets a 400 and the connection closed.
func TestMalformedRequestIs400(t *testing.T) {
	backend := named("decoy")
	defer backend.Close()
	c, br := rawConn(t, startAgent(t, backend))
	io.WriteString(c, "NOT HTTP AT ALL\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusBadRequest || !resp.Close {
		t.Fatalf("%v %v", resp, err)
	}
}

// Callers are anyone on the pod network: a request head larger than
// MaxHeaderBytes (one endless header line, or many headers) gets a 431 and
// the connection closed, not a buffer that grows with what the caller sends.
func TestOversizedRequestHeadIs431(t *testing.T) {
	backend := named("decoy")
	defer backend.Close()
	r := startAgent(t, backend)
	for name, head := range map[string]string{
		"one endless line": "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 2*interceptor.MaxHeaderBytes),
		"many headers":     "GET / HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X-H: 0123456789\r\n", 2*interceptor.MaxHeaderBytes/17),
	} {
		c, br := rawConn(t, r)
		go io.WriteString(c, head) // the agent stops reading at its limit
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge || !resp.Close {
			t.Fatalf("%s: %v %v", name, resp, err)
		}
	}
	// A head just under the limit still goes through.
	c, br := rawConn(t, r)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", interceptor.MaxHeaderBytes/2)+"\r\n\r\n")
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("a large but allowed head: %v %v", resp, err)
	}
}
