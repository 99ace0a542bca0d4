package interceptor_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/kubectl-cz/kubectl-cz/agent/interceptor"
)

// The agent's own cost on loopback, for a request that matches no rule:
// direct to the decoy, through the HTTP router, and through the byte relay
// that non-intercepted ports use.
//
//	go test -bench . -benchtime 5000x ./agent/interceptor
func BenchmarkNonMatchingRequest(b *testing.B) {
	decoy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "pong\n") }))
	defer decoy.Close()
	httpPort, rawPort, control := freePort(b), freePort(b), freePort(b)
	s := &interceptor.Server{Decoy: "127.0.0.1", Ports: []interceptor.Port{
		{Name: "http", Listen: httpPort, DecoyPort: portOf(decoy), HTTP: true},
		{Name: "raw", Listen: rawPort, DecoyPort: portOf(decoy)},
	}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx, "127.0.0.1:"+strconv.Itoa(control))
	waitDial(b, control)
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
