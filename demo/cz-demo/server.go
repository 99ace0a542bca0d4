package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

type config struct {
	Role        string
	Listen      string
	Pod         string
	Namespace   string
	Downstreams []string
	Propagate   []string
	SeedDir     string
}

// Hop is one service's part of a request's path; Calls are its downstreams.
type Hop struct {
	Service   string            `json:"service"`
	Pod       string            `json:"pod"`
	Namespace string            `json:"namespace,omitempty"`
	Headers   map[string]string `json:"headers,omitempty"`
	Calls     []Hop             `json:"calls,omitempty"`
	Keys      *int              `json:"keys,omitempty"`
	Error     string            `json:"error,omitempty"`
}

type server struct {
	cfg    config
	client *http.Client
	mux    *http.ServeMux

	mu sync.Mutex
	kv map[string][]byte
}

func newServer(cfg config) *server {
	s := &server{
		cfg: cfg,
		// A new connection per call: kube-proxy picks the backend per
		// connection, so a kept-alive one would stick to the pod it reached
		// first, past an intercept's change of the Service's endpoints.
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
		mux:    http.NewServeMux(),
		kv:     map[string][]byte{},
	}
	s.mux.HandleFunc("GET /{$}", s.hop)
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	s.mux.HandleFunc("GET /ping", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "pong\n") })
	s.mux.HandleFunc("GET /bytes", bytesHandler)
	s.mux.HandleFunc("POST /bytes", sinkHandler)
	s.mux.HandleFunc("GET /ws", s.wsEcho)
	if cfg.Role == "db" {
		s.mux.HandleFunc("GET /kv/{key}", s.kvGet)
		s.mux.HandleFunc("PUT /kv/{key}", s.kvPut)
	}
	return s
}

// ServeHTTP names the pod on every answer (X-Served-By), so a test can
// tell who answered a path that is not a hop (/ping behind an intercept).
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Served-By", s.cfg.Pod)
	s.mux.ServeHTTP(w, r)
}

// hop answers with this service's hop after calling each downstream with the
// propagated headers; a failed downstream shows in the path and makes the
// answer a 502, so a broken graph is visible at its first broken edge.
func (s *server) hop(w http.ResponseWriter, r *http.Request) {
	h := Hop{Service: s.cfg.Role, Pod: s.cfg.Pod, Namespace: s.cfg.Namespace, Headers: map[string]string{}}
	for _, name := range s.cfg.Propagate {
		if v := r.Header.Get(name); v != "" {
			h.Headers[strings.ToLower(name)] = v
		}
	}
	if s.cfg.Role == "db" {
		s.mu.Lock()
		n := len(s.kv)
		s.mu.Unlock()
		h.Keys = &n
	}
	status := http.StatusOK
	for _, base := range s.cfg.Downstreams {
		child, ok := s.call(r, base)
		if !ok {
			status = http.StatusBadGateway
		}
		h.Calls = append(h.Calls, child)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(h)
}

// call asks a downstream for its hop; ok is false when it or anything below
// it failed, so a break deep in the graph fails the whole request.
func (s *server) call(in *http.Request, base string) (Hop, bool) {
	req, err := http.NewRequestWithContext(in.Context(), http.MethodGet, strings.TrimSuffix(base, "/")+"/", nil)
	if err != nil {
		return Hop{Service: base, Error: err.Error()}, false
	}
	for _, name := range s.cfg.Propagate {
		for _, v := range in.Header.Values(name) {
			req.Header.Add(name, v)
		}
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return Hop{Service: base, Error: err.Error()}, false
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return Hop{Service: base, Error: fmt.Sprintf("%s: %v", base, err)}, false
	}
	var child Hop
	if err := json.Unmarshal(body, &child); err != nil {
		// Not a hop: say what answered instead (a proxy's error page, say).
		return Hop{Service: base, Error: fmt.Sprintf("%s answered %s: %s", base, resp.Status, strings.TrimSpace(string(body[:min(len(body), 300)])))}, false
	}
	return child, resp.StatusCode == http.StatusOK && child.Error == ""
}

func (s *server) kvGet(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	v, ok := s.kv[r.PathValue("key")]
	s.mu.Unlock()
	if !ok {
		http.Error(w, "no such key", http.StatusNotFound)
		return
	}
	w.Write(v)
}

func (s *server) kvPut(w http.ResponseWriter, r *http.Request) {
	v, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.kv[r.PathValue("key")] = v
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// sinkHandler reads the request's body and drops it, answering how many
// bytes came: the benchmarks' upload, the other direction of bytesHandler.
func sinkHandler(w http.ResponseWriter, r *http.Request) {
	n, err := io.Copy(io.Discard, r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	fmt.Fprintf(w, "%d\n", n)
}

// bytesHandler streams n bytes (default 1 MiB) from a reused buffer: the
// benchmarks' payload, cheap enough that the path, not the server, is measured.
func bytesHandler(w http.ResponseWriter, r *http.Request) {
	n := int64(1 << 20)
	if q := r.URL.Query().Get("n"); q != "" {
		v, err := strconv.ParseInt(q, 10, 64)
		if err != nil || v < 0 {
			http.Error(w, "n must be a byte count", http.StatusBadRequest)
			return
		}
		n = v
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	buf := make([]byte, 256<<10)
	for n > 0 {
		chunk := buf
		if int64(len(chunk)) > n {
			chunk = chunk[:n]
		}
		m, err := w.Write(chunk)
		if err != nil {
			return
		}
		n -= int64(m)
	}
}
