package interceptor_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"

	"github.com/kubectl-cz/kubectl-cz/agent/interceptor"
	"github.com/kubectl-cz/kubectl-cz/agent/wire"
	"github.com/kubectl-cz/kubectl-cz/intercept"
)

// named answers with its name and the protocol it was spoken to in.
func named(name string) *httptest.Server {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", name, r.Proto)
	})
	srv := httptest.NewUnstartedServer(h2c.NewHandler(h, &http2.Server{}))
	srv.Start()
	return srv
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func portOf(srv *httptest.Server) int {
	_, p, _ := net.SplitHostPort(srv.Listener.Addr().String())
	n, _ := strconv.Atoi(p)
	return n
}

type rig struct {
	listen, control int
}

func startAgent(t testing.TB, decoy *httptest.Server) rig {
	t.Helper()
	var r rig
	runAgent(t, func() *interceptor.Server {
		r = rig{listen: freePort(t), control: freePort(t)}
		return &interceptor.Server{Decoy: "127.0.0.1", Ports: []interceptor.Port{{Name: "http", Listen: r.listen, DecoyPort: portOf(decoy), HTTP: true}}}
	}, func() int { return r.control })
	return r
}

// runAgent starts the server newServer returns and waits until it listens. A
// port picked free can be taken by another socket before the agent binds
// it: then it tries again with new ports.
func runAgent(t testing.TB, newServer func() *interceptor.Server, control func() int) {
	t.Helper()
	for attempt := 0; attempt < 5; attempt++ {
		s := newServer()
		s.Ready = make(chan struct{})
		if s.Secret == "" {
			s.Secret = testSecret
		}
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- s.Run(ctx, "127.0.0.1:"+strconv.Itoa(control())) }()
		select {
		case <-s.Ready:
			t.Cleanup(cancel)
			return
		case err := <-errc:
			cancel()
			t.Logf("agent did not start (%v): trying other ports", err)
		case <-time.After(5 * time.Second):
			cancel()
			t.Fatal("agent not ready after 5s")
		}
	}
	t.Fatal("agent could not bind its ports")
}

// testSecret is the agents' connection secret in these tests.
var testSecret = wire.NewSecret()

// dialControl connects to an agent's control port (or a relay to it) and
// presents the secret, as the laptop does through port-forward.
func dialControl(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := presented(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func presented(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if err := wire.Present(ctx, c, testSecret); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (r rig) controlAddr() string { return "127.0.0.1:" + strconv.Itoa(r.control) }

func join(t testing.TB, r rig, hello wire.Hello, local string) *intercept.Tunnel {
	t.Helper()
	c := dialControl(t, r.controlAddr())
	tun, err := intercept.Register(c, hello, local)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go tun.Serve(ctx)
	// Two spare connections: tests with more concurrency also use the
	// yamux fallback.
	tun.KeepSpares(ctx, 2, func(ctx context.Context) (net.Conn, error) {
		return presented(ctx, r.controlAddr())
	})
	return tun
}

func get(t *testing.T, client *http.Client, url string, header ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var h2cClient = &http.Client{Transport: &http2.Transport{AllowHTTP: true,
	DialTLSContext: func(ctx context.Context, n, a string, _ *tls.Config) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, n, a)
	}}}

func TestHeaderRoutingHTTP1AndH2C(t *testing.T) {
	decoy, alice, bob := named("decoy"), named("alice"), named("bob")
	defer decoy.Close()
	defer alice.Close()
	defer bob.Close()
	r := startAgent(t, decoy)
	url := fmt.Sprintf("http://127.0.0.1:%d/", r.listen)

	// No developer yet: everything reaches the decoy.
	if _, body := get(t, http.DefaultClient, url, "x-cz-intercept", "alice"); body != "decoy HTTP/1.1" {
		t.Fatalf("before any developer: %q", body)
	}
	tunA := join(t, r, wire.Hello{Developer: "alice", Port: "http", Match: wire.Match{Header: "x-cz-intercept", Value: "alice"}}, alice.Listener.Addr().String())
	join(t, r, wire.Hello{Developer: "bob", Port: "http", Match: wire.Match{Header: "cz-intercept", Value: "bob", Baggage: true}}, bob.Listener.Addr().String())
	waitSpares := func() { time.Sleep(50 * time.Millisecond) } // let the laptop open its spares

	cases := []struct {
		header []string
		want   string
	}{
		{[]string{"x-cz-intercept", "alice"}, "alice"},
		{[]string{"baggage", "other=1, cz-intercept=bob;prop=x"}, "bob"},
		{[]string{"x-cz-intercept", "carol"}, "decoy"},
		{nil, "decoy"},
	}
	waitSpares()
	for _, tc := range cases {
		// A new connection each time, so spare streams are taken and replaced.
		if _, body := get(t, &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}, url, tc.header...); body != tc.want+" HTTP/1.1" {
			t.Errorf("HTTP/1.1 %v: got %q, want %s", tc.header, body, tc.want)
		}
		if _, body := get(t, h2cClient, url, tc.header...); body != tc.want+" HTTP/2.0" {
			t.Errorf("h2c %v: got %q, want %s", tc.header, body, tc.want)
		}
	}
	if tunA.SparesUsed() == 0 {
		t.Errorf("alice's requests never used a spare port-forward stream")
	}
}

func TestConcurrentDevelopersNoMisroutes(t *testing.T) {
	decoy, alice, bob := named("decoy"), named("alice"), named("bob")
	defer decoy.Close()
	defer alice.Close()
	defer bob.Close()
	r := startAgent(t, decoy)
	join(t, r, wire.Hello{Developer: "alice", Port: "http", Match: wire.Match{Header: "x-cz-intercept", Value: "alice"}}, alice.Listener.Addr().String())
	join(t, r, wire.Hello{Developer: "bob", Port: "http", Match: wire.Match{Header: "x-cz-intercept", Value: "bob"}}, bob.Listener.Addr().String())
	url := fmt.Sprintf("http://127.0.0.1:%d/", r.listen)
	who := []string{"alice", "bob", ""}
	var wg sync.WaitGroup
	var mu sync.Mutex
	bad := 0
	for g := 0; g < 10; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 60; i++ {
				w := who[(g+i)%3]
				var h []string
				want := "decoy"
				if w != "" {
					h, want = []string{"x-cz-intercept", w}, w
				}
				if _, body := get(t, http.DefaultClient, url, h...); body != want+" HTTP/1.1" {
					mu.Lock()
					bad++
					mu.Unlock()
				}
			}
		}(g)
	}
	wg.Wait()
	if bad != 0 {
		t.Fatalf("%d of 600 requests misrouted", bad)
	}
}

func TestLocalPortDownIs502NamingTheCause(t *testing.T) {
	decoy := named("decoy")
	defer decoy.Close()
	r := startAgent(t, decoy)
	join(t, r, wire.Hello{Developer: "alice", Port: "http", Match: wire.Match{Header: "x-cz-intercept", Value: "alice"}}, "127.0.0.1:"+strconv.Itoa(freePort(t)))
	code, body := get(t, http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/", r.listen), "x-cz-intercept", "alice")
	if code != http.StatusBadGateway || !strings.Contains(body, "nothing answers on 127.0.0.1:") {
		t.Fatalf("%d %q", code, body)
	}
}

func TestAllTakesEveryConnectionAndLeaveCounts(t *testing.T) {
	decoy, alice := named("decoy"), named("alice")
	defer decoy.Close()
	defer alice.Close()
	r := startAgent(t, decoy)
	tun := join(t, r, wire.Hello{Developer: "alice", Port: "http", All: true}, alice.Listener.Addr().String())
	url := fmt.Sprintf("http://127.0.0.1:%d/", r.listen)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if _, body := get(t, client, url); body != "alice HTTP/1.1" {
		t.Fatalf("--all: %q", body)
	}
	// A second developer cannot take the port's requests from under --all.
	c := dialControl(t, r.controlAddr())
	if _, err := intercept.Register(c, wire.Hello{Developer: "bob", Port: "http", Match: wire.Match{Header: "x", Value: "y"}}, "127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "--all by alice") {
		t.Fatalf("second developer under --all: %v", err)
	}
	if n, err := tun.Leave(); err != nil || n != 0 {
		t.Fatalf("leave: %d %v", n, err)
	}
	if _, body := get(t, client, url); body != "decoy HTTP/1.1" {
		t.Fatalf("after leave: %q", body)
	}
}

// A developer who comes back after a crash replaces their stale tunnel (one
// that no longer answers pings); a live one with the same rule is refused.
func TestSameDeveloperReplacesStaleTunnel(t *testing.T) {
	decoy, alice := named("decoy"), named("alice")
	defer decoy.Close()
	defer alice.Close()
	r := startAgent(t, decoy)
	hello := wire.Hello{Developer: "alice@laptop", Port: "http", Match: wire.Match{Header: "x-cz-intercept", Value: "alice"}}

	// The first tunnel goes through a relay that can go silent, like a
	// network that drops everything without closing anything.
	relay, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	frozen := make(chan struct{})
	go func() {
		c, err := relay.Accept()
		if err != nil {
			return
		}
		up, _ := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(r.control))
		cp := func(dst, src net.Conn) {
			buf := make([]byte, 1)
			for {
				if _, err := src.Read(buf); err != nil {
					return
				}
				select {
				case <-frozen:
					select {} // swallow everything from now on
				default:
				}
				dst.Write(buf)
			}
		}
		go cp(up, c)
		cp(c, up)
	}()
	c := dialControl(t, relay.Addr().String())
	stale, err := intercept.Register(c, hello, "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	go stale.Serve(context.Background())

	// While it answers, the same rule from elsewhere is refused.
	c2 := dialControl(t, r.controlAddr())
	if _, err := intercept.Register(c2, hello, alice.Listener.Addr().String()); err == nil || !strings.Contains(err.Error(), "another terminal") {
		t.Fatalf("a live duplicate: %v", err)
	}
	close(frozen)
	join(t, r, hello, alice.Listener.Addr().String())
	if _, body := get(t, http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/", r.listen), "x-cz-intercept", "alice"); body != "alice HTTP/1.1" {
		t.Fatalf("after rejoining: %q", body)
	}
}

// One user with two rules (two terminals) keeps both.
func TestSameUserTwoRulesKeepsBoth(t *testing.T) {
	decoy, a, b := named("decoy"), named("a"), named("b")
	defer decoy.Close()
	defer a.Close()
	defer b.Close()
	r := startAgent(t, decoy)
	join(t, r, wire.Hello{Developer: "alice@laptop", Port: "http", Match: wire.Match{Header: "x-cz-intercept", Value: "a"}}, a.Listener.Addr().String())
	join(t, r, wire.Hello{Developer: "alice@laptop", Port: "http", Match: wire.Match{Header: "x-cz-intercept", Value: "b"}}, b.Listener.Addr().String())
	url := fmt.Sprintf("http://127.0.0.1:%d/", r.listen)
	for _, v := range []string{"a", "b"} {
		if _, body := get(t, http.DefaultClient, url, "x-cz-intercept", v); body != v+" HTTP/1.1" {
			t.Fatalf("rule %s: %q", v, body)
		}
	}
}

// A route probe reports whether the Service's own address reaches this
// agent: its router answers the probe itself; the original pods do not.
func TestRouteProbe(t *testing.T) {
	decoy := named("decoy")
	defer decoy.Close()
	for _, tc := range []struct {
		name   string
		target func(listen int) string
		want   byte
	}{
		{"the address reaches the agent", func(listen int) string { return "127.0.0.1:" + strconv.Itoa(listen) }, wire.ProbeRouted},
		{"the address still reaches the original pods", func(int) string { return decoy.Listener.Addr().String() }, wire.ProbeNotYet},
	} {
		var r rig
		runAgent(t, func() *interceptor.Server {
			r = rig{listen: freePort(t), control: freePort(t)}
			return &interceptor.Server{Decoy: "127.0.0.1", Probe: tc.target(r.listen), Ports: []interceptor.Port{{Name: "http", Listen: r.listen, DecoyPort: portOf(decoy), HTTP: true}}}
		}, func() int { return r.control })
		c := dialControl(t, r.controlAddr())
		if _, err := c.Write([]byte{wire.ProbeMagic}); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 1)
		if _, err := io.ReadFull(c, got); err != nil || got[0] != tc.want {
			t.Errorf("%s: verdict %v %v, want %v", tc.name, got, err, tc.want)
		}
		c.Close()
	}
	// A caller cannot pass for the probe: a wrong token is routed as usual.
	r := startAgent(t, decoy)
	if _, body := get(t, http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/", r.listen), wire.ProbeHeader, "guess"); body != "decoy HTTP/1.1" {
		t.Errorf("a guessed probe token: %q", body)
	}
}

// The count answers how many developers the agent serves: what a close of
// a crashed developer's environment asks before removing the interceptor.
// A developer whose tunnel dropped (a kill -9) no longer counts.
func TestCountOfDevelopers(t *testing.T) {
	decoy, alice, bob := named("decoy"), named("alice"), named("bob")
	defer decoy.Close()
	defer alice.Close()
	defer bob.Close()
	r := startAgent(t, decoy)
	count := func() int {
		t.Helper()
		c := dialControl(t, r.controlAddr())
		defer c.Close()
		if _, err := c.Write([]byte{wire.CountMagic}); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 1)
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatal(err)
		}
		return int(got[0])
	}
	if n := count(); n != 0 {
		t.Fatalf("no developer yet: count %d", n)
	}
	ta := join(t, r, wire.Hello{Developer: "alice", Port: "http", Match: wire.Match{Header: "x-dev", Value: "alice"}}, alice.Listener.Addr().String())
	join(t, r, wire.Hello{Developer: "bob", Port: "http", Match: wire.Match{Header: "x-dev", Value: "bob"}}, bob.Listener.Addr().String())
	if n := count(); n != 2 {
		t.Fatalf("two developers: count %d", n)
	}
	ta.Close() // no goodbye, as when the laptop's process dies
	deadline := time.Now().Add(5 * time.Second)
	for count() != 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := count(); n != 1 {
		t.Fatalf("after alice's tunnel dropped: count %d", n)
	}
}

// Path, method and header-expression rules route request by request, over
// HTTP/1.1 and h2c; a rule that could meet another developer's is refused
// naming theirs.
func TestPathMethodAndRegexRules(t *testing.T) {
	decoy, alice, bob := named("decoy"), named("alice"), named("bob")
	defer decoy.Close()
	defer alice.Close()
	defer bob.Close()
	r := startAgent(t, decoy)
	base := fmt.Sprintf("http://127.0.0.1:%d", r.listen)
	join(t, r, wire.Hello{Developer: "alice", Port: "http", Match: wire.Match{Path: "/ping"}}, alice.Listener.Addr().String())
	join(t, r, wire.Hello{Developer: "bob", Port: "http", Match: wire.Match{Header: "x-tenant", Value: "test-[0-9]+", HeaderRegex: true, Path: "/orders/[0-9]+", PathRegex: true, Method: "GET"}}, bob.Listener.Addr().String())
	for _, tc := range []struct {
		path   string
		header []string
		want   string
	}{
		{"/ping", nil, "alice"},
		{"/ping/deeper", []string{"x-tenant", "test-1"}, "alice"},
		{"/pin", nil, "decoy"},
		{"/orders/12", []string{"x-tenant", "test-7"}, "bob"},
		{"/orders/12", []string{"x-tenant", "test-7x"}, "decoy"},
		{"/orders/x", []string{"x-tenant", "test-7"}, "decoy"},
		{"/", nil, "decoy"},
	} {
		if _, body := get(t, http.DefaultClient, base+tc.path, tc.header...); body != tc.want+" HTTP/1.1" {
			t.Errorf("HTTP/1.1 %s %v: got %q, want %s", tc.path, tc.header, body, tc.want)
		}
		if _, body := get(t, h2cClient, base+tc.path, tc.header...); body != tc.want+" HTTP/2.0" {
			t.Errorf("h2c %s %v: got %q, want %s", tc.path, tc.header, body, tc.want)
		}
	}
	c := dialControl(t, r.controlAddr())
	_, err := intercept.Register(c, wire.Hello{Developer: "carol", Port: "http", Match: wire.Match{Path: "/p"}}, "127.0.0.1:1")
	if err == nil || !strings.Contains(err.Error(), "alice's") || !strings.Contains(err.Error(), "path /ping*") {
		t.Errorf("an overlapping rule: %v", err)
	}
}

// A mirror takes nothing: the matching request is answered by the decoy
// (or a developer who takes it), and a copy, body and all, reaches the
// mirror's laptop; the Leave counts the copies.
func TestMirrorGetsACopy(t *testing.T) {
	decoy, bob := named("decoy"), named("bob")
	defer decoy.Close()
	defer bob.Close()
	type seen struct{ method, path, body, header string }
	copies := make(chan seen, 16)
	mirrorSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		copies <- seen{r.Method, r.URL.RequestURI(), string(b), r.Header.Get("x-cz-intercept")}
		io.WriteString(w, "the mirror's answer, dropped")
	}))
	defer mirrorSrv.Close()
	r := startAgent(t, decoy)
	base := fmt.Sprintf("http://127.0.0.1:%d", r.listen)
	m := join(t, r, wire.Hello{Developer: "alice", Port: "http", Mirror: true, Match: wire.Match{Header: "x-cz-intercept", Value: "m"}}, mirrorSrv.Listener.Addr().String())
	// bob takes the same requests: a mirror clashes with no one.
	join(t, r, wire.Hello{Developer: "bob", Port: "http", Match: wire.Match{Header: "x-cz-intercept", Value: "m", Path: "/bob"}}, bob.Listener.Addr().String())
	post := func(path string) string {
		req, _ := http.NewRequest(http.MethodPost, base+path+"?q=1", strings.NewReader("payload"))
		req.Header.Set("x-cz-intercept", "m")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	for path, want := range map[string]string{"/orders": "decoy HTTP/1.1", "/bob": "bob HTTP/1.1"} {
		if got := post(path); got != want {
			t.Errorf("POST %s answered %q, want %q", path, got, want)
		}
		select {
		case c := <-copies:
			if c.method != "POST" || c.path != path+"?q=1" || c.body != "payload" || c.header != "m" {
				t.Errorf("the copy: %+v", c)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no copy of POST %s reached the mirror", path)
		}
	}
	if _, body := get(t, http.DefaultClient, base+"/", "x-cz-intercept", "other"); body != "decoy HTTP/1.1" {
		t.Errorf("a request the mirror's rule does not match: %q", body)
	}
	select {
	case c := <-copies:
		t.Errorf("a copy of a request the rule does not match: %+v", c)
	case <-time.After(200 * time.Millisecond):
	}
	if _, err := m.Leave(); err != nil || m.Mirrored != 2 || m.Dropped != 0 {
		t.Errorf("leave: %v, %d copies, %d dropped", err, m.Mirrored, m.Dropped)
	}
}

// A mirror that records gets the cluster's answer with each copy.
func TestMirrorCopyCarriesTheClustersAnswer(t *testing.T) {
	decoy := named("decoy")
	defer decoy.Close()
	answers := make(chan string, 4)
	mirrorSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		answers <- r.Header.Get(wire.MirrorAnswerHeader)
	}))
	defer mirrorSrv.Close()
	r := startAgent(t, decoy)
	join(t, r, wire.Hello{Developer: "alice", Port: "http", Mirror: true, RecordAnswers: true, Match: wire.Match{Header: "x-cz-intercept", Value: "m"}}, mirrorSrv.Listener.Addr().String())
	if _, body := get(t, http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/", r.listen), "x-cz-intercept", "m"); body != "decoy HTTP/1.1" {
		t.Fatalf("answered %q", body)
	}
	select {
	case raw := <-answers:
		a, err := wire.DecodeAnswer(raw)
		if err != nil || a.Status != 200 || string(a.Body) != "decoy HTTP/1.1" || a.Truncated {
			t.Errorf("the cluster's answer on the copy: %+v %v", a, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no copy")
	}
}
