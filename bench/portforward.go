package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// transports of `kubectl port-forward`: its default (SPDY tunnelled in
// WebSocket) and plain SPDY.
var transports = []struct{ name, env string }{
	{"websocket", "KUBECTL_PORT_FORWARD_WEBSOCKETS=true"},
	{"spdy", "KUBECTL_PORT_FORWARD_WEBSOCKETS=false"},
}

func (b *bench) portForward(ctx context.Context) error {
	direct := "http://" + net.JoinHostPort(b.podIP, "8080")
	if err := b.httpRows(ctx, "direct (pod IP)", direct, "", nil); err != nil {
		return err
	}
	for _, tr := range transports {
		pf, err := startPortForward(ctx, tr.env, 0)
		if err != nil {
			return err
		}
		err = b.httpRows(ctx, "kubectl port-forward ("+tr.name+")", "http://"+pf.addr, "direct (pod IP)", nil)
		pf.stop()
		if err != nil {
			return err
		}
	}
	for _, tr := range transports {
		r := &row{name: "cold start: kubectl port-forward (" + tr.name + ") to first answer", unit: "ms"}
		for i := 0; i < b.runs; i++ {
			d, err := coldStart(ctx, tr.env)
			if err != nil {
				return err
			}
			r.samples = append(r.samples, ms(d))
		}
		b.table.add(r)
	}
	return nil
}

// httpRows measures one path: 100 MiB GET throughput, keep-alive ping
// latency and new-connection latency. dial, if set, opens the connections
// (from the laptop namespace, for teleport).
func (b *bench) httpRows(ctx context.Context, path, base, baseline string, dial func(context.Context, string, string) (net.Conn, error)) error {
	fmt.Fprintf(os.Stderr, "bench: %s\n", path)
	thr := &row{name: "GET 100 MiB, " + path, unit: "MiB/s", baseline: baselineName("GET 100 MiB", baseline)}
	up := &row{name: "POST 100 MiB, " + path, unit: "MiB/s", baseline: baselineName("POST 100 MiB", baseline)}
	keep := &row{name: "ping, keep-alive, " + path, unit: "ms", baseline: baselineName("ping, keep-alive", baseline)}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true, DialContext: dial}}
	defer client.CloseIdleConnections()
	if err := b.transfers(ctx, client, base, thr); err != nil {
		return err
	}
	if err := b.uploads(ctx, client, base, up); err != nil {
		return err
	}
	if err := b.pingsKeepAlive(ctx, client, base, keep); err != nil {
		return err
	}
	noKeep := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DialContext: dial}}
	fresh := &row{name: "new connection + request + first byte, " + path, unit: "ms", baseline: baselineName("new connection + request + first byte", baseline)}
	// The same, 20 ms apart: an application's occasional calls, which
	// leave a tunnel time to make its next stream ready.
	spaced := &row{name: "new connection 20 ms after the last + request + first byte, " + path, unit: "ms",
		baseline: baselineName("new connection 20 ms after the last + request + first byte", baseline)}
	for _, r := range []struct {
		row *row
		gap time.Duration
	}{{fresh, 0}, {spaced, 20 * time.Millisecond}} {
		for i := 0; i < b.pings/4; i++ {
			time.Sleep(r.gap)
			start := time.Now()
			resp, err := noKeep.Get(base + "/ping")
			if err != nil {
				return err
			}
			r.row.samples = append(r.row.samples, ms(time.Since(start)))
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	b.table.add(thr)
	b.table.add(up)
	b.table.add(keep)
	b.table.add(fresh)
	b.table.add(spaced)
	return nil
}

// transfers adds b.runs samples of a 100 MiB GET from base to r.
func (b *bench) transfers(ctx context.Context, client *http.Client, base string, r *row) error {
	for i := 0; i < b.runs; i++ {
		start := time.Now()
		n, err := get(ctx, client, fmt.Sprintf("%s/bytes?n=%d", base, blobSize))
		if err != nil {
			return err
		}
		if n != blobSize {
			return fmt.Errorf("%s: got %d bytes, want %d", r.name, n, blobSize)
		}
		r.samples = append(r.samples, mibps(n, time.Since(start)))
	}
	return nil
}

// uploads adds b.runs samples of a 100 MiB POST to base to r: the upload
// direction, the one a mount's writes take.
func (b *bench) uploads(ctx context.Context, client *http.Client, base string, r *row) error {
	for i := 0; i < b.runs; i++ {
		start := time.Now()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/bytes", io.LimitReader(&randomBytes{}, blobSize))
		if err != nil {
			return err
		}
		req.ContentLength = blobSize
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		answer, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(answer)) != strconv.Itoa(blobSize) {
			return fmt.Errorf("%s: answered %s %q, want %d bytes counted", r.name, resp.Status, answer, blobSize)
		}
		r.samples = append(r.samples, mibps(blobSize, time.Since(start)))
	}
	return nil
}

// randomBytes repeats one random MiB: bytes no link can compress, made
// once so the sender's CPU goes to the path, not to making them.
type randomBytes struct{ at int }

var oneRandomMiB = func() []byte {
	b := make([]byte, 1<<20)
	_, _ = rand.Read(b)
	return b
}()

func (r *randomBytes) Read(p []byte) (int, error) {
	n := copy(p, oneRandomMiB[r.at:])
	r.at = (r.at + n) % len(oneRandomMiB)
	return n, nil
}

// pingsKeepAlive adds b.pings samples of GET /ping over client's kept-alive
// connection to r.
func (b *bench) pingsKeepAlive(ctx context.Context, client *http.Client, base string, r *row) error {
	for i := 0; i < b.pings; i++ {
		start := time.Now()
		if _, err := get(ctx, client, base+"/ping"); err != nil {
			return err
		}
		r.samples = append(r.samples, ms(time.Since(start)))
	}
	return nil
}

// baselineName is the row a metric is compared with: rows are named
// "<metric>, <path>".
func baselineName(metric, path string) string {
	if path == "" {
		return ""
	}
	return metric + ", " + path
}

func get(ctx context.Context, c *http.Client, url string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return n, err
}

type portForward struct {
	cmd  *exec.Cmd
	addr string
}

func (p *portForward) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	_ = p.cmd.Wait()
}

var forwarding = regexp.MustCompile(`Forwarding from (127\.0\.0\.1:\d+)`)

// startPortForward runs `kubectl port-forward` to the bench pod on the given
// local port (0: any) and returns once it says where it listens.
func startPortForward(ctx context.Context, env string, port int) (*portForward, error) {
	cmd := exec.CommandContext(ctx, "kubectl", "port-forward", "-n", benchNamespace, "--address", "127.0.0.1",
		"pod/"+benchPod, strconv.Itoa(port)+":8080")
	cmd.Env = append(os.Environ(), env)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if m := forwarding.FindStringSubmatch(sc.Text()); m != nil {
			go io.Copy(io.Discard, out)
			return &portForward{cmd: cmd, addr: m[1]}, nil
		}
	}
	_ = cmd.Wait()
	return nil, fmt.Errorf("kubectl port-forward exited without forwarding")
}

// coldStart times a new `kubectl port-forward` process from launch to the
// first answer through it.
func coldStart(ctx context.Context, env string) (time.Duration, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	start := time.Now()
	cmd := exec.CommandContext(ctx, "kubectl", "port-forward", "-n", benchNamespace, "--address", "127.0.0.1",
		"pod/"+benchPod, fmt.Sprintf("%d:8080", port))
	cmd.Env = append(os.Environ(), env)
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Second}
	url := fmt.Sprintf("http://127.0.0.1:%d/ping", port)
	for time.Since(start) < 20*time.Second {
		if _, err := get(ctx, client, url); err == nil {
			return time.Since(start), nil
		}
		time.Sleep(2 * time.Millisecond)
	}
	return 0, fmt.Errorf("port-forward on %d never answered", port)
}
