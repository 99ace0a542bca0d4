//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// The intercept tests run `kubectl cz intercept` and a local copy of the
// core service (cz-demo, answering with its own pod name) in the laptop
// namespace, and send requests from the host, a caller inside the cluster
// network, to the frontend: frontend -> core shows who served core.

const interceptSession = "icpt-sample-project-core"

// startLocal runs a local "core" in the laptop namespace on a port.
func startLocal(t *testing.T, name string, port int) {
	bin := filepath.Join(repoRoot(t), ".cz", "bin", "cz-demo")
	p := startOnLaptop(t, []string{"ROLE=core", "POD_NAME=" + name, "LISTEN=127.0.0.1:" + strconv.Itoa(port)}, bin)
	p.waitFor("listening", 10*time.Second)
	t.Cleanup(func() { p.signal(syscall.SIGTERM); p.wait(10 * time.Second) })
}

// startIntercept runs `kubectl cz intercept service core ...` on the laptop
// through kubectl's plugin mechanism and waits until it is active.
func startIntercept(t *testing.T, env []string, args ...string) *proc {
	p := startOnLaptop(t, env, "kubectl", append([]string{"cz", "-n", demoNamespace, "intercept", "service", "core"}, args...)...)
	p.waitFor("intercept active", 60*time.Second)
	return p
}

func stopIntercept(t *testing.T, p *proc) {
	t.Helper()
	p.signal(syscall.SIGTERM)
	if err := p.wait(60 * time.Second); err != nil {
		t.Fatalf("intercept exit: %v\n%s", err, p.output())
	}
}

var httpClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// coreServedBy sends one request to the frontend and returns the pod that
// served core on its path.
func coreServedBy(t testing.TB, frontendIP string, header ...string) (string, error) {
	req, _ := http.NewRequest(http.MethodGet, "http://"+frontendIP+"/", nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var hop struct {
		Calls []struct{ Pod, Error string }
	}
	if err := json.Unmarshal(body, &hop); err != nil || len(hop.Calls) != 1 {
		return "", fmt.Errorf("status %d, body %q", resp.StatusCode, body)
	}
	if hop.Calls[0].Error != "" || resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d, core: %s", resp.StatusCode, hop.Calls[0].Error)
	}
	return hop.Calls[0].Pod, nil
}

// serviceURL is a demo Service's address, as callers in the cluster reach it.
func serviceURL(t testing.TB, cs kubernetes.Interface, name string) string {
	t.Helper()
	svc, err := cs.CoreV1().Services(demoNamespace).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return "http://" + svc.Spec.ClusterIP
}

func frontendIP(t testing.TB, cs kubernetes.Interface) string {
	svc, err := cs.CoreV1().Services(demoNamespace).Get(context.Background(), "frontend", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return svc.Spec.ClusterIP
}

// waitServedBy waits until requests with the header reach want (kube-proxy
// applies a Service change within about a second).
func waitServedBy(t *testing.T, ip, want string, header ...string) {
	t.Helper()
	var got string
	var err error
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if got, err = coreServedBy(t, ip, header...); err == nil && strings.HasPrefix(got, want) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("requests with %v reach %q (err %v), want %s", header, got, err, want)
}

func assertNoInterceptor(t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	ctx := context.Background()
	if _, err := cs.AppsV1().Deployments(demoNamespace).Get(ctx, "cz-interceptor-core", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("interceptor deployment left behind (%v)", err)
	}
	if _, err := cs.CoreV1().Services(demoNamespace).Get(ctx, "cz-decoy-core", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("decoy service left behind (%v)", err)
	}
	if configMapExists(t, cs, "cz-session-"+interceptSession) {
		t.Errorf("session journal left behind")
	}
}

func TestInterceptNamespaceIsRestricted(t *testing.T) {
	ns, err := clientset(t).CoreV1().Namespaces().Get(context.Background(), demoNamespace, metav1.GetOptions{})
	if err != nil || ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Fatalf("the intercept tests must run in a restricted namespace: %v %v", ns.Labels, err)
	}
}

// Header intercept: requests with alice's header reach the laptop, the rest
// the cluster; Ctrl-C gives the Service back byte for byte.
func TestInterceptHeader(t *testing.T) {
	cs := clientset(t)
	before := guardService(t, cs, "core")
	ip := frontendIP(t, cs)
	startLocal(t, "laptop-alice", 3000)
	p := startIntercept(t, machine(t), "--local-port", "3000", "--header", "x-cz-intercept=alice")
	// "Active" means traffic flows: the very first request after it, with
	// no retry, reaches the laptop.
	for i := 0; i < 20; i++ {
		if got, err := coreServedBy(t, ip, "x-cz-intercept", "alice"); err != nil || got != "laptop-alice" {
			t.Fatalf("with header: %q %v", got, err)
		}
		if got, err := coreServedBy(t, ip); err != nil || !strings.HasPrefix(got, "core-") {
			t.Fatalf("without header: %q %v", got, err)
		}
		if got, err := coreServedBy(t, ip, "x-cz-intercept", "bob"); err != nil || !strings.HasPrefix(got, "core-") {
			t.Fatalf("another header value: %q %v", got, err)
		}
	}
	stopIntercept(t, p)
	if after := serviceSnapshot(t, cs, "core"); !bytes.Equal(after, before) {
		t.Errorf("service not restored:\nbefore %s\nafter  %s", before, after)
	}
	assertNoInterceptor(t, cs)
	waitServedBy(t, ip, "core-", "x-cz-intercept", "alice")
}

// Baggage member matching and --all.
func TestInterceptBaggageAndAll(t *testing.T) {
	cs := clientset(t)
	before := guardService(t, cs, "core")
	ip := frontendIP(t, cs)
	startLocal(t, "laptop-carol", 3003)
	p := startIntercept(t, machine(t), "--local-port", "3003", "--header", "baggage:cz-intercept=carol")
	waitServedBy(t, ip, "laptop-carol", "baggage", "team=x,cz-intercept=carol")
	if got, _ := coreServedBy(t, ip, "baggage", "cz-intercept=dave"); !strings.HasPrefix(got, "core-") {
		t.Fatalf("another baggage value reached %q", got)
	}
	stopIntercept(t, p)

	p = startIntercept(t, machine(t), "--local-port", "3003", "--all")
	waitServedBy(t, ip, "laptop-carol")
	for i := 0; i < 20; i++ {
		if got, err := coreServedBy(t, ip); err != nil || got != "laptop-carol" {
			t.Fatalf("--all: %q %v", got, err)
		}
	}
	stopIntercept(t, p)
	if after := serviceSnapshot(t, cs, "core"); !bytes.Equal(after, before) {
		t.Errorf("service not restored after --all")
	}
	assertNoInterceptor(t, cs)
}

// Two developers share the Service: 1,000 requests split between them and
// the cluster, zero misroutes and zero errors; the first to leave does not
// disturb the other; the last restores the Service.
func TestInterceptTwoDevelopers(t *testing.T) {
	cs := clientset(t)
	before := guardService(t, cs, "core")
	ip := frontendIP(t, cs)
	startLocal(t, "laptop-alice", 3001)
	startLocal(t, "laptop-bob", 3002)
	alice := startIntercept(t, machine(t), "--local-port", "3001", "--header", "x-cz-intercept=alice")
	bob := startIntercept(t, machine(t), "--local-port", "3002", "--header", "x-cz-intercept=bob")
	if !strings.Contains(bob.output(), "joining its interceptor") {
		t.Errorf("bob did not join alice's interceptor:\n%s", bob.output())
	}
	waitServedBy(t, ip, "laptop-alice", "x-cz-intercept", "alice")
	waitServedBy(t, ip, "laptop-bob", "x-cz-intercept", "bob")

	var mu sync.Mutex
	misroutes, errs, total := 0, 0, 0
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < 1000; i += 8 {
				var header []string
				want := "core-"
				switch i % 3 {
				case 0:
					header, want = []string{"x-cz-intercept", "alice"}, "laptop-alice"
				case 1:
					header, want = []string{"x-cz-intercept", "bob"}, "laptop-bob"
				}
				got, err := coreServedBy(t, ip, header...)
				mu.Lock()
				total++
				switch {
				case err != nil:
					errs++
				case !strings.HasPrefix(got, want):
					misroutes++
				}
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	if total != 1000 || misroutes != 0 || errs != 0 {
		t.Fatalf("%d requests: %d misroutes, %d errors", total, misroutes, errs)
	}

	stopIntercept(t, alice)
	if !strings.Contains(alice.output(), "still intercept") {
		t.Errorf("alice's leave:\n%s", alice.output())
	}
	// With alice gone, her header no longer matches: her requests reach the
	// original pods rather than failing.
	waitServedBy(t, ip, "core-", "x-cz-intercept", "alice")
	for i := 0; i < 20; i++ {
		if got, err := coreServedBy(t, ip, "x-cz-intercept", "bob"); err != nil || got != "laptop-bob" {
			t.Fatalf("after alice left, bob's request reached %q (%v)", got, err)
		}
	}
	stopIntercept(t, bob)
	if after := serviceSnapshot(t, cs, "core"); !bytes.Equal(after, before) {
		t.Errorf("service not restored by the last developer")
	}
	assertNoInterceptor(t, cs)
}

// kill -9 mid-intercept: `kubectl cz session close` from another machine
// restores the Service and removes the interceptor and decoy.
func TestInterceptKilledThenSessionClose(t *testing.T) {
	cs := clientset(t)
	before := guardService(t, cs, "core")
	ip := frontendIP(t, cs)
	startLocal(t, "laptop-erin", 3004)
	p := startIntercept(t, machine(t), "--local-port", "3004")
	// The default rule is x-cz-intercept: <user>.
	waitServedBy(t, ip, "laptop-erin", "x-cz-intercept", "kubectl-cz-admin")
	p.signal(syscall.SIGKILL)
	p.wait(10 * time.Second)
	if r := cz(t, machine(t), "-n", demoNamespace, "session", "close", interceptSession); r.err != nil {
		t.Fatalf("close: %v\n%s", r.err, r.stdout)
	}
	if after := serviceSnapshot(t, cs, "core"); !bytes.Equal(after, before) {
		t.Errorf("service not restored:\nbefore %s\nafter  %s", before, after)
	}
	assertNoInterceptor(t, cs)
	waitServedBy(t, ip, "core-", "x-cz-intercept", "kubectl-cz-admin")
}

// Bad input gets one line and leaves nothing behind; a local port with
// nothing listening gives the caller a 502 naming the cause.
func TestInterceptErrors(t *testing.T) {
	cs := clientset(t)
	before := guardService(t, cs, "core")
	r := onLaptop(t, 30*time.Second, "kubectl", "cz", "-n", demoNamespace, "intercept", "service", "nope", "--local-port", "3000")
	if r.err == nil || !strings.Contains(r.stderr, `service "nope" not found`) {
		t.Errorf("unknown service: %v %q", r.err, r.stderr)
	}
	r = onLaptop(t, 60*time.Second, "kubectl", "cz", "-n", demoNamespace, "intercept", "service", "core", "--local-port", "3000",
		"--agent-image", "kubectl-cz.local/no-such-agent:1", "--agent-pull-policy", "Never")
	if r.err == nil || !strings.Contains(r.stderr, "ErrImageNeverPull") {
		t.Errorf("unpullable image: %v %q", r.err, r.stderr)
	}
	if after := serviceSnapshot(t, cs, "core"); !bytes.Equal(after, before) {
		t.Errorf("a failed intercept changed the Service")
	}
	assertNoInterceptor(t, cs)

	ip := frontendIP(t, cs)
	p := startIntercept(t, machine(t), "--local-port", "3999", "--header", "x-cz-intercept=nobody")
	if !strings.Contains(p.output(), "nothing listens on 127.0.0.1:3999") {
		t.Errorf("no warning about the idle local port:\n%s", p.output())
	}
	var err error
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if _, err = coreServedBy(t, ip, "x-cz-intercept", "nobody"); err != nil && strings.Contains(err.Error(), "nothing answers on 127.0.0.1:3999") {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err == nil || !strings.Contains(err.Error(), "502") || !strings.Contains(err.Error(), "nothing answers on 127.0.0.1:3999") {
		t.Errorf("request to an idle local port: %v", err)
	}
	stopIntercept(t, p)
	assertNoInterceptor(t, cs)
}

// The agent pod is deleted mid-intercept: its Deployment starts another, the
// laptop reconnects by itself, and requests reach the laptop again.
func TestInterceptReconnectsAfterAgentPodLoss(t *testing.T) {
	ctx := context.Background()
	cs := clientset(t)
	before := guardService(t, cs, "core")
	ip := frontendIP(t, cs)
	startLocal(t, "laptop-frank", 3007)
	p := startIntercept(t, machine(t), "--local-port", "3007", "--header", "x-cz-intercept=frank")
	waitServedBy(t, ip, "laptop-frank", "x-cz-intercept", "frank")
	pods, err := cs.CoreV1().Pods(demoNamespace).List(ctx, metav1.ListOptions{LabelSelector: "cz.dev/interceptor=core"})
	if err != nil {
		t.Fatal(err)
	}
	deleted := 0
	for _, pod := range pods.Items {
		// Skip a pod of an earlier test's interceptor that is still going away.
		if pod.DeletionTimestamp == nil && pod.Status.Phase == "Running" {
			if err := cs.CoreV1().Pods(demoNamespace).Delete(ctx, pod.Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			deleted++
		}
	}
	if deleted != 1 {
		t.Fatalf("%d running interceptor pods, want 1", deleted)
	}
	p.waitFor("tunnel up again", 60*time.Second)
	waitServedBy(t, ip, "laptop-frank", "x-cz-intercept", "frank")
	stopIntercept(t, p)
	if after := serviceSnapshot(t, cs, "core"); !bytes.Equal(after, before) {
		t.Errorf("service not restored after a reconnect")
	}
	assertNoInterceptor(t, cs)
}

// A developer whose Role lacks a permission intercept needs (creating
// Services) gets one line naming it, and nothing is left behind.
func TestInterceptMissingRBAC(t *testing.T) {
	cs := clientset(t)
	before := guardService(t, cs, "core")
	const sa = "cz-limited"
	grantRole(t, cs, sa,
		rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list", "create", "update", "delete"}},
		rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"services"}, Verbs: []string{"get", "update"}})
	var r result
	waitUntil(t, 15*time.Second, func() bool {
		r = onLaptop(t, 60*time.Second, "kubectl", "cz", "--as", "system:serviceaccount:sample-project:"+sa, "-n", demoNamespace,
			"intercept", "service", "core", "--local-port", "3000")
		// Until the RoleBinding applies, the first failure is reading the Service.
		return strings.Contains(r.stderr, "needs create on secrets")
	})
	lines := strings.Split(strings.TrimSpace(lastLines(r.stderr, "error:")), "\n")
	if r.err == nil || len(lines) != 1 || !strings.Contains(lines[0], "create on secrets") || !strings.Contains(lines[0], "nothing was changed") {
		t.Fatalf("intercept without the right to create Secrets: %v\n%s", r.err, r.stderr)
	}
	if after := serviceSnapshot(t, cs, "core"); !bytes.Equal(after, before) {
		t.Errorf("a refused intercept changed the Service")
	}
	assertNoInterceptor(t, cs)
}

// One of two developers crashes: the agent drops the dead tunnel, so that
// developer's header reaches the original pods instead of failing; the
// other keeps working and, leaving last, restores the Service.
func TestInterceptOneDeveloperCrashes(t *testing.T) {
	cs := clientset(t)
	before := guardService(t, cs, "core")
	ip := frontendIP(t, cs)
	startLocal(t, "laptop-gina", 3008)
	startLocal(t, "laptop-hank", 3009)
	gina := startIntercept(t, machine(t), "--local-port", "3008", "--header", "x-cz-intercept=gina")
	hank := startIntercept(t, machine(t), "--local-port", "3009", "--header", "x-cz-intercept=hank")
	waitServedBy(t, ip, "laptop-gina", "x-cz-intercept", "gina")
	waitServedBy(t, ip, "laptop-hank", "x-cz-intercept", "hank")
	gina.signal(syscall.SIGKILL)
	gina.wait(10 * time.Second)
	waitServedBy(t, ip, "core-", "x-cz-intercept", "gina")
	for i := 0; i < 20; i++ {
		if got, err := coreServedBy(t, ip, "x-cz-intercept", "hank"); err != nil || got != "laptop-hank" {
			t.Fatalf("after gina crashed, hank's request reached %q (%v)", got, err)
		}
	}
	stopIntercept(t, hank)
	if after := serviceSnapshot(t, cs, "core"); !bytes.Equal(after, before) {
		t.Errorf("service not restored by the last developer")
	}
	assertNoInterceptor(t, cs)
}

// servedBy sends one request to a Service's address from the host (a
// caller in the cluster's network) and says who answered: a local
// server's name, or "cluster".
func directServedBy(url string, header ...string) (string, error) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d", resp.StatusCode)
	}
	if by := resp.Header.Get("X-Served-By"); strings.HasPrefix(by, "laptop-") {
		return by, nil
	}
	return "cluster", nil
}

// Path rules: alice takes every request under /ping (a path-only rule),
// bob those under /healthz with his header; 1,000 requests of four kinds
// reach the right one; a third rule that could meet alice's is refused
// naming hers, and a rule that is no regular expression before anything
// changes; the Service comes back byte for byte.
func TestInterceptPathRules(t *testing.T) {
	cs := clientset(t)
	before := guardService(t, cs, "core")
	base := serviceURL(t, cs, "core")
	r := onLaptop(t, 30*time.Second, "kubectl", "cz", "-n", demoNamespace, "intercept", "service", "core", "--local-port", "3013", "--path-regex", "(")
	if r.err == nil || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || !strings.Contains(r.stderr, "not a regular expression") {
		t.Errorf("a path that is no regular expression: %v\n%s", r.err, r.stderr)
	}
	assertNoInterceptor(t, cs)

	startLocal(t, "laptop-alice", 3011)
	startLocal(t, "laptop-bob", 3012)
	alice := startIntercept(t, machine(t), "--local-port", "3011", "--path", "/ping")
	bob := startIntercept(t, machine(t), "--local-port", "3012", "--header", "x-cz-intercept=bob", "--path", "/healthz")
	carol := startOnLaptop(t, machine(t), "kubectl", "cz", "-n", demoNamespace, "intercept", "service", "core", "--local-port", "3013", "--path", "/p")
	if err := carol.wait(60 * time.Second); err == nil || !strings.Contains(carol.output(), "path /ping*") {
		t.Errorf("carol's /p could meet alice's /ping and should be refused naming it: %v\n%s", err, carol.output())
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		got, err := directServedBy(base + "/ping")
		if err == nil && got == "laptop-alice" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/ping reaches %q (%v), want laptop-alice", got, err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	var mu sync.Mutex
	misroutes, errs, total := 0, 0, 0
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < 1000; i += 8 {
				path, want, header := "/ping", "laptop-alice", []string(nil)
				switch i % 4 {
				case 1:
					path, want, header = "/healthz", "laptop-bob", []string{"x-cz-intercept", "bob"}
				case 2:
					path, want = "/healthz", "cluster"
				case 3:
					header = []string{"x-cz-intercept", "bob"} // bob's header, alice's path
				}
				got, err := directServedBy(base+path, header...)
				mu.Lock()
				total++
				switch {
				case err != nil:
					errs++
				case got != want:
					misroutes++
				}
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	if total != 1000 || misroutes != 0 || errs != 0 {
		t.Errorf("%d requests: %d misroutes, %d errors", total, misroutes, errs)
	}
	// dave's rule: two headers and bob's path; his header value parts him
	// from bob, his path from alice.
	startLocal(t, "laptop-dave", 3014)
	dave := startIntercept(t, machine(t), "--local-port", "3014", "--header", "x-cz-intercept=dave", "--header", "x-team=red", "--path", "/healthz")
	waitUntil(t, 15*time.Second, func() bool {
		got, err := directServedBy(base+"/healthz", "x-cz-intercept", "dave", "x-team", "red")
		return err == nil && got == "laptop-dave"
	})
	for i := 0; i < 20; i++ {
		for _, c := range []struct {
			header []string
			want   string
		}{{[]string{"x-cz-intercept", "dave", "x-team", "red"}, "laptop-dave"}, {[]string{"x-cz-intercept", "dave"}, "cluster"}, {[]string{"x-cz-intercept", "bob", "x-team", "red"}, "laptop-bob"}} {
			if got, err := directServedBy(base+"/healthz", c.header...); err != nil || got != c.want {
				t.Fatalf("/healthz with %v reached %q (%v), want %s", c.header, got, err, c.want)
			}
		}
	}
	stopIntercept(t, dave)
	stopIntercept(t, bob)
	stopIntercept(t, alice)
	assertRestored(t, cs, "core", before, interceptSession)
}

// A mirror: core keeps answering the requests with the header, byte for
// byte as before, and a copy of each reaches a local core through the
// tunnel (the agent counts the copies the local core answered).
func TestInterceptMirror(t *testing.T) {
	cs := clientset(t)
	before := guardService(t, cs, "core")
	url := serviceURL(t, cs, "core") + "/"
	body := func() string {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("x-cz-intercept", "mm")
		resp, err := httpClient.Do(req)
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return fmt.Sprintf("%d %s", resp.StatusCode, b)
	}
	// An earlier test's intercept may have just put core back: kube-proxy
	// follows within a second or so.
	var want string
	waitUntil(t, 15*time.Second, func() bool { want = body(); return strings.HasPrefix(want, "200 ") })
	if !strings.Contains(want, `"service":"core"`) {
		t.Fatalf("core answers %s", want)
	}
	startLocal(t, "laptop-mirror", 3031)
	file := filepath.Join(t.TempDir(), "mirror.jsonl")
	m := startIntercept(t, machine(t), "--local-port", "3031", "--header", "x-cz-intercept=mm", "--mirror", "--record", file)
	const n = 50
	for i := 0; i < n; i++ {
		if got := body(); got != want {
			t.Fatalf("request %d with a mirror active: %s, want the cluster's %s", i, got, want)
		}
	}
	stopIntercept(t, m)
	line := ""
	for _, l := range strings.Split(m.output(), "\n") {
		if strings.HasPrefix(l, "mirror: ") {
			line = l
		}
	}
	var copies, dropped int
	if _, err := fmt.Sscanf(line, "mirror: %d copies reached 127.0.0.1:3031, %d dropped", &copies, &dropped); err != nil || copies != n || dropped != 0 {
		t.Errorf("want %d copies, none dropped: %q (%v)\n%s", n, line, err, m.output())
	}
	// The recording holds the cluster's answers, as the callers got them.
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != n {
		t.Fatalf("%d entries recorded, want %d\n%s", len(lines), n, m.output())
	}
	for _, l := range lines {
		var e struct {
			From   string
			Answer struct {
				Status int
				Body   []byte
			}
		}
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprintf("%d %s", e.Answer.Status, e.Answer.Body); e.From != "cluster" || got != want {
			t.Fatalf("recorded from %s: %s, want the cluster's %s", e.From, got, want)
		}
	}
	assertRestored(t, cs, "core", before, interceptSession)
}

// --record writes what reaches the laptop with its answers, secrets
// redacted; kubectl cz replay sends it to another local core and names the
// one field whose answer differs (and none against the same core).
func TestInterceptRecordAndReplay(t *testing.T) {
	cs := clientset(t)
	before := guardService(t, cs, "core")
	url := serviceURL(t, cs, "core") + "/"
	startLocal(t, "laptop-rec-a", 3041)
	startLocal(t, "laptop-rec-b", 3042)
	file := filepath.Join(t.TempDir(), "core.jsonl")
	rec := startIntercept(t, machine(t), "--local-port", "3041", "--header", "x-cz-intercept=rec", "--record", file)
	waitUntil(t, 15*time.Second, func() bool {
		by, err := directServedBy(url, "x-cz-intercept", "rec")
		return err == nil && by == "laptop-rec-a"
	})
	for i := 0; i < 5; i++ {
		if by, err := directServedBy(url, "x-cz-intercept", "rec", "Authorization", "Bearer top-secret"); err != nil || by != "laptop-rec-a" {
			t.Fatalf("request %d reached %q (%v)", i, by, err)
		}
	}
	stopIntercept(t, rec)
	assertRestored(t, cs, "core", before, interceptSession)
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	entries := strings.Count(string(data), "\n")
	if entries < 6 || strings.Contains(string(data), "top-secret") || !strings.Contains(rec.output(), fmt.Sprintf("recorded %d requests", entries)) {
		t.Fatalf("%d entries (want 6 or more, no secret):\n%s\n%s", entries, data, rec.output())
	}
	r := onLaptop(t, 60*time.Second, "kubectl", "cz", "replay", file, "--to", "127.0.0.1:3042")
	if r.err == nil || strings.Count(r.stdout, `pod: "laptop-rec-a" -> "laptop-rec-b"`) != entries || strings.Count(r.stdout, "    ") != entries {
		t.Errorf("replay against another core: %v\n%s%s", r.err, r.stdout, r.stderr)
	}
	if r := onLaptop(t, 60*time.Second, "kubectl", "cz", "replay", file, "--to", "127.0.0.1:3041"); r.err != nil || strings.Contains(r.stdout, "differs") {
		t.Errorf("replay against the recorded core: %v\n%s%s", r.err, r.stdout, r.stderr)
	}
}
