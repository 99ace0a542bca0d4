package interceptor_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/kubectl-cz/kubectl-cz/agent/interceptor"
	"github.com/kubectl-cz/kubectl-cz/agent/wire"
)

// The agent's own cost on loopback, for a request that matches no rule:
// direct to the decoy, through the HTTP router, and through the byte relay
// that non-intercepted ports use.
//
//	go test -bench . -benchtime 5000x ./agent/interceptor
func BenchmarkNonMatchingRequest(b *testing.B) {
	decoy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "pong\n") }))
	defer decoy.Close()
	var httpPort, rawPort, control int
	runAgent(b, func() *interceptor.Server {
		httpPort, rawPort, control = freePort(b), freePort(b), freePort(b)
		return &interceptor.Server{Decoy: "127.0.0.1", Ports: []interceptor.Port{
			{Name: "http", Listen: httpPort, DecoyPort: portOf(decoy), HTTP: true},
			{Name: "raw", Listen: rawPort, DecoyPort: portOf(decoy)},
		}}
	}, func() int { return control })
	for _, tc := range []struct{ name, url string }{
		{"direct", decoy.URL + "/ping"},
		{"router", fmt.Sprintf("http://127.0.0.1:%d/ping", httpPort)},
		{"relay", fmt.Sprintf("http://127.0.0.1:%d/ping", rawPort)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			defer client.CloseIdleConnections()
			for i := 0; i < b.N; i++ {
				resp, err := client.Get(tc.url)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
}

// A header-matched request on loopback: through the router, over a yamux
// tunnel (here a plain TCP connection stands in for port-forward) and the
// laptop's relay, beside the same request sent straight to the local server.
func BenchmarkMatchedRequest(b *testing.B) {
	decoy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "decoy\n") }))
	defer decoy.Close()
	local := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "pong\n") }))
	defer local.Close()
	r := startAgent(b, decoy)
	join(b, r, wire.Hello{Developer: "bench", Port: "http", Match: wire.Match{Header: "x-cz-intercept", Value: "bench"}}, local.Listener.Addr().String())
	for _, tc := range []struct{ name, url string }{
		{"direct", local.URL + "/ping"},
		{"tunnel", fmt.Sprintf("http://127.0.0.1:%d/ping", r.listen)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			defer client.CloseIdleConnections()
			for i := 0; i < b.N; i++ {
				req, _ := http.NewRequest(http.MethodGet, tc.url, nil)
				req.Header.Set("x-cz-intercept", "bench")
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(body) != "pong\n" {
					b.Fatalf("answered %q", body)
				}
			}
		})
	}
}
