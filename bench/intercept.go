package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	laptopNetns = "cz-laptop"
	localAddr   = "127.0.0.1:3100"
)

// laptopCmd runs a command in the laptop network namespace.
func laptopCmd(ctx context.Context, env []string, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", laptopNetns, name}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	return cmd
}

var (
	interceptActive = regexp.MustCompile(`intercept active after ([0-9.]+)s`)
	teleportActive  = regexp.MustCompile(`teleport active after ([0-9.]+)s`)
)

// startIntercept runs `kubectl-cz intercept` on the laptop and returns it
// once active, with the time it reported from start to active.
func startIntercept(ctx context.Context, args ...string) (*exec.Cmd, float64, error) {
	return startPlugin(ctx, interceptActive, append([]string{"-n", benchNamespace, "intercept", "service", benchPod, "--local-port", strings.Split(localAddr, ":")[1]}, args...)...)
}

// startPlugin runs kubectl-cz on the laptop and returns it once it printed
// the line active matches, with the seconds that line reports.
func startPlugin(ctx context.Context, active *regexp.Regexp, args ...string) (*exec.Cmd, float64, error) {
	plugin, err := exec.LookPath("kubectl-cz")
	if err != nil {
		return nil, 0, err
	}
	cmd := laptopCmd(ctx, []string{"KUBECTL_CZ_STATE_DIR=" + os.TempDir() + "/cz-bench-state"}, plugin, args...)
	secs, err := waitActive(cmd, active)
	return cmd, secs, err
}

// waitActive starts cmd and returns once it printed the line active
// matches, with the seconds that line reports.
func waitActive(cmd *exec.Cmd, active *regexp.Regexp) (float64, error) {
	secs, _, err := waitActiveKeep(cmd, active)
	return secs, err
}

// waitActiveKeep is waitActive that also keeps what cmd prints after, for
// rest, which is whole once cmd has ended.
func waitActiveKeep(cmd *exec.Cmd, active *regexp.Regexp) (secs float64, rest func() string, err error) {
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, nil, err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return 0, nil, err
	}
	sc := bufio.NewScanner(out)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if m := active.FindStringSubmatch(sc.Text()); m != nil {
			var mu sync.Mutex
			var kept strings.Builder
			go func() {
				for sc.Scan() {
					mu.Lock()
					kept.WriteString(sc.Text() + "\n")
					mu.Unlock()
				}
			}()
			secs, _ := strconv.ParseFloat(m[1], 64)
			return secs, func() string { mu.Lock(); defer mu.Unlock(); return kept.String() }, nil
		}
	}
	_ = cmd.Wait()
	return 0, nil, fmt.Errorf("%s did not become active:\n%s", strings.Join(cmd.Args, " "), strings.Join(lines, "\n"))
}

// stopPlugin ends a plugin started by startPlugin as Ctrl-C would.
func stopPlugin(cmd *exec.Cmd) error {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	return cmd.Wait()
}

// intercept measures `kubectl cz intercept` on the bench Service: time to
// active; keep-alive latency of a header-matched request (to the laptop)
// and of a non-matching one (through the agent to the original pod), beside
// the same request sent directly to the pod; 100 MiB through --all beside
// kubectl port-forward.
func (b *bench) intercept(ctx context.Context) error {
	fmt.Fprintln(os.Stderr, "bench: kubectl cz intercept")
	svc, err := b.cs.CoreV1().Services(benchNamespace).Get(ctx, benchPod, metav1.GetOptions{})
	if err != nil {
		return err
	}
	base := "http://" + svc.Spec.ClusterIP
	demo, err := exec.LookPath("cz-demo")
	if err != nil {
		return err
	}
	local := laptopCmd(ctx, []string{"ROLE=leaf", "POD_NAME=laptop", "LISTEN=" + localAddr}, demo)
	if err := local.Start(); err != nil {
		return err
	}
	defer func() { _ = local.Process.Signal(syscall.SIGTERM); _ = local.Wait() }()

	active := &row{name: "time from start to intercept active, kubectl cz intercept", unit: "s"}
	// The direct pings are taken in turn with the intercepted ones, so both
	// see the same load on the node.
	direct := &row{name: "ping, keep-alive, direct (pod IP), in turn with the intercepted pings", unit: "ms"}
	// The floor of a header-matched request: one port-forward round trip.
	floor := &row{name: "ping, keep-alive, kubectl port-forward (spdy), in turn with the intercepted pings", unit: "ms", baseline: direct.name}
	matched := &row{name: "ping, keep-alive, header-matched via interceptor to laptop", unit: "ms", baseline: direct.name}
	passed := &row{name: "ping, keep-alive, non-matching via interceptor to pod", unit: "ms", baseline: direct.name}
	all := &row{name: "GET 100 MiB, kubectl cz intercept --all", unit: "MiB/s", baseline: "GET 100 MiB, kubectl port-forward (websocket)"}
	allPing := &row{name: "ping, keep-alive, --all via interceptor to laptop", unit: "ms", baseline: direct.name}

	for run := 0; run < b.runs; run++ {
		cmd, secs, err := startIntercept(ctx, "--header", "x-cz-intercept=bench")
		if err != nil {
			return err
		}
		active.samples = append(active.samples, secs)
		if run == 0 {
			if err := b.interceptLatency(ctx, base, direct, floor, matched, passed); err != nil {
				stopPlugin(cmd)
				return err
			}
		}
		if err := stopPlugin(cmd); err != nil {
			return fmt.Errorf("intercept exit: %w", err)
		}
	}

	cmd, _, err := startIntercept(ctx, "--all")
	if err != nil {
		return err
	}
	defer stopPlugin(cmd) // on an early return; stopped below otherwise
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	// Until kube-proxy routes new connections to the interceptor, the
	// original pod answers; its answer has no "laptop" in it.
	if err := waitLaptop(ctx, base, nil); err != nil {
		return err
	}
	if err := b.pingsKeepAlive(ctx, client, base, allPing); err != nil {
		return err
	}
	if err := b.transfers(ctx, client, base, all); err != nil {
		return err
	}
	stopPlugin(cmd)
	mirrorRows, err := b.interceptMirror(ctx, base)
	if err != nil {
		return err
	}
	for _, r := range append([]*row{active, direct, floor, matched, passed, allPing, all}, mirrorRows...) {
		b.table.add(r)
	}
	return nil
}

// interceptMirror measures --mirror: the pod's answer to a mirrored request
// beside the same request sent straight to the pod, in turn; and how many
// copies reach the laptop of 2,000 requests sent at 1,000 a second.
func (b *bench) interceptMirror(ctx context.Context, base string) ([]*row, error) {
	direct := &row{name: "ping, keep-alive, direct (pod IP), in turn with the mirrored pings", unit: "ms"}
	mirrored := &row{name: "ping, keep-alive, header-matched with --mirror, answered by the pod", unit: "ms", baseline: direct.name}
	delivered := &row{name: "--mirror: copies that reached the laptop, of 2,000 requests at 1,000/s", unit: "%"}
	plugin, err := exec.LookPath("kubectl-cz")
	if err != nil {
		return nil, err
	}
	cmd := laptopCmd(ctx, []string{"KUBECTL_CZ_STATE_DIR=" + os.TempDir() + "/cz-bench-state"}, plugin,
		"-n", benchNamespace, "intercept", "service", benchPod, "--local-port", strings.Split(localAddr, ":")[1], "--header", "x-cz-intercept=mirror", "--mirror")
	_, rest, err := waitActiveKeep(cmd, interceptActive)
	if err != nil {
		return nil, err
	}
	hdr := http.Header{"X-Cz-Intercept": {"mirror"}}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	defer client.CloseIdleConnections()
	ping := func(url string, h http.Header) (time.Duration, error) { return pingOnce(ctx, client, url, h) }
	// The pings wait until the agent routes the Service's address.
	sent, err := waitRouted(ctx, base+"/ping", hdr)
	if err != nil {
		stopPlugin(cmd)
		return nil, err
	}
	podURL := "http://" + net.JoinHostPort(b.podIP, "8080")
	for i := 0; i < b.pings; i++ {
		for _, p := range []struct {
			r   *row
			url string
			h   http.Header
		}{{direct, podURL, nil}, {mirrored, base, hdr}} {
			d, err := ping(p.url, p.h)
			if err != nil {
				stopPlugin(cmd)
				return nil, err
			}
			p.r.samples = append(p.r.samples, ms(d))
		}
		sent++
	}
	// 2,000 requests at 1,000 a second, from 8 callers.
	const total, callers = 2000, 8
	var wg sync.WaitGroup
	var failed atomic.Int32
	start := time.Now()
	for c := 0; c < callers; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			for i := c; i < total; i += callers {
				time.Sleep(time.Until(start.Add(time.Duration(i) * time.Millisecond)))
				if _, err := ping(base, hdr); err != nil {
					failed.Add(1)
				}
			}
		}(c)
	}
	wg.Wait()
	if err := stopPlugin(cmd); err != nil {
		return nil, fmt.Errorf("intercept --mirror exit: %w", err)
	}
	var copies, dropped int
	for _, line := range strings.Split(rest(), "\n") {
		if strings.HasPrefix(line, "mirror: ") {
			_, _ = fmt.Sscanf(line, "mirror: %d copies reached %s %d dropped", &copies, new(string), &dropped)
		}
	}
	if failed.Load() > 0 {
		return nil, fmt.Errorf("--mirror: %d of %d requests failed", failed.Load(), total)
	}
	// Every request with the header since active was copied: the latency
	// pings' too.
	delivered.samples = []float64{100 * float64(copies) / float64(total+sent)}
	return []*row{direct, mirrored, delivered}, nil
}

// pingOnce asks url's /ping with the header and times the answer.
func pingOnce(ctx context.Context, client *http.Client, url string, h http.Header) (time.Duration, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/ping", nil)
	for k, v := range h {
		req.Header[k] = v
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("ping: %s", resp.Status)
	}
	return time.Since(start), nil
}

// waitRouted waits until a request with the header gets an answer through
// the Service's address, and says how many it sent.
func waitRouted(ctx context.Context, url string, header http.Header) (int, error) {
	sent := 0
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		for k, v := range header {
			req.Header[k] = v
		}
		sent++
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return sent, nil
			}
		}
	}
	return sent, fmt.Errorf("%s never answered", url)
}

// waitLaptop waits until a request (with the header, if any) reaches the
// laptop's server, which answers GET / with pod "laptop".
func waitLaptop(ctx context.Context, base string, header http.Header) error {
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/", nil)
		for k, v := range header {
			req.Header[k] = v
		}
		resp, err := client.Do(req)
		if err != nil {
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), `"pod":"laptop"`) {
			return nil
		}
	}
	return fmt.Errorf("requests never reached the laptop")
}

func (b *bench) interceptLatency(ctx context.Context, base string, direct, floor, matched, passed *row) error {
	hdr := http.Header{"X-Cz-Intercept": {"bench"}}
	if err := waitLaptop(ctx, base, hdr); err != nil {
		return err
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer client.CloseIdleConnections()
	podURL := "http://" + net.JoinHostPort(b.podIP, "8080")
	pf, err := startPortForward(ctx, "KUBECTL_PORT_FORWARD_WEBSOCKETS=false", 0)
	if err != nil {
		return err
	}
	defer pf.stop()
	ping := func(url string, h http.Header) (time.Duration, error) { return pingOnce(ctx, client, url, h) }
	for i := 0; i < b.pings; i++ {
		for _, p := range []struct {
			r   *row
			url string
			h   http.Header
		}{{direct, podURL, nil}, {floor, "http://" + pf.addr, nil}, {matched, base, hdr}, {passed, base, nil}} {
			d, err := ping(p.url, p.h)
			if err != nil {
				return err
			}
			p.r.samples = append(p.r.samples, ms(d))
		}
	}
	return nil
}
