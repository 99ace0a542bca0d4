package record

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"reflect"
	"sort"
	"strings"
	"time"
)

// Result is one replayed entry: where its new answer differs.
type Result struct {
	Request string   `json:"request"`
	Status  [2]int   `json:"status"` // recorded, now
	Diffs   []string `json:"diffs,omitempty"`
	Error   string   `json:"error,omitempty"`
}

// Replay sends each recorded request to base (http://HOST:PORT) and
// compares the answers with the recorded ones: status, and body, field by
// field where both are JSON. A redacted header is not sent.
func Replay(ctx context.Context, path, base string) ([]Result, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	defer f.Close()
	client := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var out []Result
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 8<<20)
	for line := 1; sc.Scan(); line++ {
		var e Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return out, fmt.Errorf("%s:%d: not a recorded request: %v", path, line, err)
		}
		r := Result{Request: e.Request.Method + " " + e.Request.URI, Status: [2]int{e.Answer.Status}}
		req, err := http.NewRequestWithContext(ctx, e.Request.Method, base+e.Request.URI, bytes.NewReader(e.Request.Body))
		if err != nil {
			return out, fmt.Errorf("%s:%d: %v", path, line, err)
		}
		for k, vs := range e.Request.Header {
			if len(vs) == 1 && vs[0] == Redacted {
				continue
			}
			req.Header[k] = vs
		}
		req.Host = e.Request.Host
		resp, err := client.Do(req)
		if err != nil {
			r.Error = err.Error()
			out = append(out, r)
			continue
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
		resp.Body.Close()
		r.Status[1] = resp.StatusCode
		if resp.StatusCode != e.Answer.Status {
			r.Diffs = append(r.Diffs, fmt.Sprintf("status: %d -> %d", e.Answer.Status, resp.StatusCode))
		}
		r.Diffs = append(r.Diffs, bodyDiff(e.Answer.Body, body)...)
		out = append(out, r)
	}
	return out, sc.Err()
}

// bodyDiff names the JSON fields whose values differ (a.b[2].c), or says
// the bodies differ when they are not both JSON.
func bodyDiff(was, now []byte) []string {
	var a, b any
	if json.Unmarshal(was, &a) == nil && json.Unmarshal(now, &b) == nil {
		var diffs []string
		jsonDiff("", a, b, &diffs)
		return diffs
	}
	if !bytes.Equal(was, now) {
		return []string{fmt.Sprintf("body: %d bytes -> %d bytes, not the same", len(was), len(now))}
	}
	return nil
}

func jsonDiff(path string, a, b any, out *[]string) {
	name := path
	if name == "" {
		name = "(body)"
	}
	switch av := a.(type) {
	case map[string]any:
		bv, ok := b.(map[string]any)
		if !ok {
			break
		}
		keys := map[string]bool{}
		for k := range av {
			keys[k] = true
		}
		for k := range bv {
			keys[k] = true
		}
		var sorted []string
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		for _, k := range sorted {
			p := k
			if path != "" {
				p = path + "." + k
			}
			jsonDiff(p, av[k], bv[k], out)
		}
		return
	case []any:
		bv, ok := b.([]any)
		if !ok || len(av) != len(bv) {
			break
		}
		for i := range av {
			jsonDiff(fmt.Sprintf("%s[%d]", path, i), av[i], bv[i], out)
		}
		return
	}
	if !reflect.DeepEqual(a, b) {
		*out = append(*out, fmt.Sprintf("%s: %s -> %s", name, short(a), short(b)))
	}
}

func short(v any) string {
	if v == nil {
		return "(none)"
	}
	b, _ := json.Marshal(v)
	s := string(b)
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return strings.ReplaceAll(s, "\n", " ")
}
