package record

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubectl-cz/kubectl-cz/relay"
)

func server(pod string) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Set-Cookie", "session=s3cret")
		fmt.Fprintf(w, `{"service":"core","pod":%q,"echo":%q,"calls":[{"service":"leaf"}]}`, pod, b)
	}))
}

// Requests relayed to a local server are recorded with their answers,
// secrets redacted; replaying them against another build names the field
// that differs, and against the same build none.
func TestRecordThenReplay(t *testing.T) {
	a, b := server("laptop-a"), server("laptop-b")
	defer a.Close()
	defer b.Close()
	path := filepath.Join(t.TempDir(), "rec.jsonl")
	rec, err := Create(path, false)
	if err != nil {
		t.Fatal(err)
	}
	// The agent's side of a relayed connection, and the local server's.
	agent, tunnel := net.Pipe()
	local, err := net.Dial("tcp", a.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	st, lc := rec.Conns(tunnel, local)
	go relay.Pipe(lc, st)
	br := bufio.NewReader(agent)
	for i := 0; i < 2; i++ { // two requests on one kept-alive connection
		req, _ := http.NewRequest(http.MethodPost, "http://core/orders?n="+fmt.Sprint(i), strings.NewReader("hello"))
		req.Header.Set("Authorization", "Bearer top-secret")
		req.Header.Set("X-Cz-Intercept", "me")
		if err := req.Write(agent); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	agent.Close()
	// The recorder writes once it has the answer: wait for both entries.
	var written int
	for i := 0; i < 100 && written < 2; i++ {
		rec.mu.Lock()
		written = rec.written
		rec.mu.Unlock()
		if written < 2 {
			waitABit()
		}
	}
	if n, lost, err := rec.Close(); err != nil || n != 2 || lost != 0 {
		t.Fatalf("recorded %d, lost %d, %v", n, lost, err)
	}
	data, _ := os.ReadFile(path)
	if strings.Contains(string(data), "top-secret") || strings.Contains(string(data), "s3cret") {
		t.Fatalf("a secret was recorded:\n%s", data)
	}
	var e Entry
	if err := json.Unmarshal([]byte(strings.SplitN(string(data), "\n", 2)[0]), &e); err != nil {
		t.Fatal(err)
	}
	if e.Request.Method != "POST" || e.Request.URI != "/orders?n=0" || string(e.Request.Body) != "hello" || e.Answer.Status != 200 || e.Request.Header.Get("X-Cz-Intercept") != "me" {
		t.Errorf("entry: %+v", e)
	}
	results, err := Replay(context.Background(), path, b.URL)
	if err != nil || len(results) != 2 {
		t.Fatalf("replay: %v %v", results, err)
	}
	for _, r := range results {
		if len(r.Diffs) != 1 || !strings.HasPrefix(r.Diffs[0], `pod: "laptop-a" -> "laptop-b"`) {
			t.Errorf("%s: diffs %v", r.Request, r.Diffs)
		}
	}
	results, _ = Replay(context.Background(), path, a.URL)
	for _, r := range results {
		if len(r.Diffs) != 0 || r.Error != "" {
			t.Errorf("against the recorded build, %s: %v %s", r.Request, r.Diffs, r.Error)
		}
	}
}

func waitABit() { <-time.After(20 * time.Millisecond) }
