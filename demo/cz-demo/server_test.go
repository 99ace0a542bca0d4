package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
)

func TestHopCallsDownstreamsWithPropagatedHeaders(t *testing.T) {
	leaf := httptest.NewServer(newServer(config{Role: "leaf", Pod: "leaf-1", Propagate: []string{"x-cz-intercept", "baggage"}}))
	defer leaf.Close()
	core := httptest.NewServer(newServer(config{Role: "core", Pod: "core-1", Downstreams: []string{leaf.URL}, Propagate: []string{"x-cz-intercept", "baggage"}}))
	defer core.Close()

	req, _ := http.NewRequest(http.MethodGet, core.URL+"/", nil)
	req.Header.Set("X-Cz-Intercept", "alice")
	req.Header.Set("Baggage", "cz-intercept=alice")
	req.Header.Set("X-Other", "dropped")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h Hop
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || h.Service != "core" || h.Pod != "core-1" || len(h.Calls) != 1 {
		t.Fatalf("got %d %+v", resp.StatusCode, h)
	}
	got := h.Calls[0]
	if got.Service != "leaf" || got.Headers["x-cz-intercept"] != "alice" || got.Headers["baggage"] != "cz-intercept=alice" {
		t.Fatalf("leaf hop %+v: want the headers propagated", got)
	}
	if _, ok := got.Headers["x-other"]; ok {
		t.Fatalf("a header outside the list was propagated: %+v", got.Headers)
	}
}

func TestHopReportsBrokenDownstream(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	front := httptest.NewServer(newServer(config{Role: "frontend", Downstreams: []string{dead.URL}}))
	defer front.Close()
	resp, err := http.Get(front.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h Hop
	_ = json.NewDecoder(resp.Body).Decode(&h)
	if resp.StatusCode != http.StatusBadGateway || len(h.Calls) != 1 || h.Calls[0].Error == "" {
		t.Fatalf("got %d %+v, want 502 with the failed call", resp.StatusCode, h)
	}
}

func TestHopFailsWhenADeeperHopFails(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	core := httptest.NewServer(newServer(config{Role: "core", Downstreams: []string{dead.URL}}))
	defer core.Close()
	front := httptest.NewServer(newServer(config{Role: "frontend", Downstreams: []string{core.URL}}))
	defer front.Close()
	resp, err := http.Get(front.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("frontend answered %d with a broken leaf: want 502", resp.StatusCode)
	}
}

func TestWebSocketEcho(t *testing.T) {
	srv := httptest.NewServer(newServer(config{Role: "leaf", Pod: "leaf-1"}))
	defer srv.Close()
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.WriteMessage(websocket.TextMessage, []byte("hi"))
	if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "leaf-1: hi" {
		t.Fatalf("%q %v", msg, err)
	}
}

func TestKVStore(t *testing.T) {
	db := httptest.NewServer(newServer(config{Role: "db"}))
	defer db.Close()
	req, _ := http.NewRequest(http.MethodPut, db.URL+"/kv/greeting", strings.NewReader("hello"))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("put: %v %v", resp, err)
	}
	resp, err := http.Get(db.URL + "/kv/greeting")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "hello" {
		t.Fatalf("get = %q", b)
	}
	if resp, _ := http.Get(db.URL + "/kv/missing"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("missing key: %d", resp.StatusCode)
	}
	resp, _ = http.Get(db.URL + "/")
	var h Hop
	_ = json.NewDecoder(resp.Body).Decode(&h)
	if h.Keys == nil || *h.Keys != 1 {
		t.Fatalf("db hop %+v: want keys=1", h)
	}
}

func TestBytes(t *testing.T) {
	srv := httptest.NewServer(newServer(config{Role: "leaf"}))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/bytes?n=1000000")
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	if n != 1000000 || resp.ContentLength != 1000000 {
		t.Fatalf("got %d bytes, length %d", n, resp.ContentLength)
	}
	if resp, _ := http.Get(srv.URL + "/bytes?n=-1"); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("negative n: %d", resp.StatusCode)
	}
}

func TestSinkCountsTheUpload(t *testing.T) {
	srv := httptest.NewServer(newServer(config{Role: "leaf"}))
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/bytes", "application/octet-stream", io.LimitReader(zeros{}, 3<<20+5))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != fmt.Sprintf("%d\n", 3<<20+5) {
		t.Fatalf("answer %d %q", resp.StatusCode, body)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestSeedFilesOnlyIntoEmptyDir(t *testing.T) {
	dir := t.TempDir()
	if err := seedFiles(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "config", "settings.yaml")); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "README.md"), []byte("mine"), 0o644)
	if err := seedFiles(dir); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "README.md")); string(b) != "mine" {
		t.Fatal("seeding overwrote an existing file")
	}
}
