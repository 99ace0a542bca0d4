//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// laptopState is what teleport may change on the laptop: its resolver
// file, its hosts file (the namespace's own copies, which `ip netns exec`
// mounts over /etc) and the loopback interface's addresses.
type laptopState struct{ resolv, hosts, addrs string }

func snapshotLaptop(t *testing.T) laptopState {
	t.Helper()
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	out, err := exec.Command("ip", "netns", "exec", laptopNetns, "ip", "-4", "-o", "addr", "show", "dev", "lo").Output()
	if err != nil {
		t.Fatal(err)
	}
	return laptopState{resolv: read("/etc/netns/" + laptopNetns + "/resolv.conf"), hosts: read("/etc/netns/" + laptopNetns + "/hosts"), addrs: string(out)}
}

func assertLaptopRestored(t *testing.T, before laptopState) {
	t.Helper()
	if after := snapshotLaptop(t); after != before {
		t.Errorf("the laptop was not put back:\nbefore %+v\nafter  %+v", before, after)
	}
}

// servedBy asks a URL from the laptop and returns the pod that answered.
func servedBy(t *testing.T, url string) (string, error) {
	t.Helper()
	r := onLaptop(t, 15*time.Second, "curl", "-sS", "-m", "10", url)
	if r.err != nil {
		return "", &curlError{r.stderr}
	}
	var hop struct{ Service, Pod string }
	if err := json.Unmarshal([]byte(r.stdout), &hop); err != nil {
		return "", err
	}
	return hop.Service + " " + hop.Pod, nil
}

type curlError struct{ msg string }

func (e *curlError) Error() string { return e.msg }

func TestTeleportNamespace(t *testing.T) {
	ctx := context.Background()
	cs := clientset(t)
	before := snapshotLaptop(t)
	p := startOnLaptop(t, machine(t), "kubectl-cz", "-n", demoNamespace, "teleport", "namespace")
	p.waitFor("teleport active", 60*time.Second)

	if s := snapshotLaptop(t); !strings.Contains(s.resolv, "nameserver 127.0.21.53") {
		t.Fatalf("resolv.conf not pointed at the shim:\n%s", s.resolv)
	}
	// Every form of name, a headless Service's pod, and a call that goes
	// on inside the cluster (frontend calls core).
	for url, want := range map[string]string{
		"http://core/":                                          "core ",
		"http://leaf.sample-project/":                           "leaf ",
		"http://leaf.sample-project.svc/":                       "leaf ",
		"http://frontend.sample-project.svc.cluster.local/":     "frontend ",
		"http://db-0.db.sample-project.svc.cluster.local:8080/": "db db-0",
	} {
		got, err := servedBy(t, url)
		if err != nil || !strings.HasPrefix(got, want) {
			t.Errorf("%s: %q %v, want %q...\n%s", url, got, err, want, p.output())
		}
	}

	// A client that half-closes after its request (nc -N, HTTP/1.0 tools)
	// still gets its answer: the half-close crosses the tunnel as one.
	if r := onLaptop(t, 15*time.Second, "env", "CZ_E2E_HALF_CLOSE=leaf."+demoNamespace+":80", os.Args[0], "-test.run=^TestHelperHalfClose$"); r.err != nil || !strings.Contains(r.stdout, "pong") {
		t.Errorf("half-closed request through teleport: %v %s\n%s", r.err, r.stdout, r.stderr)
	}

	// A pod that goes away is replaced without restarting teleport.
	old, err := servedBy(t, "http://leaf/")
	if err != nil {
		t.Fatal(err)
	}
	oldPod := strings.TrimPrefix(old, "leaf ")
	if err := cs.CoreV1().Pods(demoNamespace).Delete(ctx, oldPod, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 90*time.Second, func() bool {
		got, err := servedBy(t, "http://leaf/")
		return err == nil && got != old
	})
	// The cluster's own path to the new pod (core calls leaf) settles too
	// before the next test relies on it.
	waitUntil(t, 60*time.Second, func() bool {
		r := onLaptop(t, 10*time.Second, "curl", "-sS", "-m", "3", "http://core/")
		return r.err == nil && strings.Contains(r.stdout, `"service":"leaf"`) && !strings.Contains(r.stdout, `"error"`)
	})

	p.signal(syscall.SIGTERM)
	if err := p.wait(30 * time.Second); err != nil {
		t.Fatalf("exit: %v\n%s", err, p.output())
	}
	assertLaptopRestored(t, before)
	if _, err := servedBy(t, "http://core.sample-project/"); err == nil {
		t.Error("cluster names still answer after teleport ended")
	}
}

// kill -9 leaves the laptop altered; the next kubectl cz command on the
// same machine puts it back. With --dns hosts, /etc/hosts carries the names.
func TestTeleportCrashThenNextCommandRestores(t *testing.T) {
	before := snapshotLaptop(t)
	env := machine(t)
	p := startOnLaptop(t, env, "kubectl-cz", "-n", demoNamespace, "teleport", "namespace", "--dns", "hosts", "--exclude", "frontend")
	p.waitFor("teleport active", 60*time.Second)
	s := snapshotLaptop(t)
	if !strings.Contains(s.hosts, "core.sample-project.svc.cluster.local") || strings.Contains(s.hosts, "frontend") || s.resolv != before.resolv {
		t.Fatalf("--dns hosts --exclude frontend:\nhosts %s\nresolv %s", s.hosts, s.resolv)
	}
	if got, err := servedBy(t, "http://core/"); err != nil || !strings.HasPrefix(got, "core ") {
		t.Fatalf("through /etc/hosts: %q %v", got, err)
	}
	p.signal(syscall.SIGKILL)
	_ = p.wait(10 * time.Second)
	if snapshotLaptop(t) == before {
		t.Fatal("kill -9 left nothing to recover: the test proves nothing")
	}
	r := cz(t, env, "session", "list", "-n", demoNamespace)
	if r.err != nil || !strings.Contains(r.stdout, "recovered session") {
		t.Fatalf("next command: %v\n%s", r.err, r.stdout)
	}
	assertLaptopRestored(t, before)
}

// Bad input changes nothing and says so in one line.
func TestTeleportErrors(t *testing.T) {
	before := snapshotLaptop(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"teleport", "namespace", "no-such-namespace"}, `namespace "no-such-namespace" not found`},
		{[]string{"teleport", "namespace", "--dns", "magic"}, `--dns "magic"`},
		{[]string{"teleport", "services"}, "want: kubectl cz teleport namespace"},
	} {
		r := onLaptop(t, 30*time.Second, "kubectl-cz", tc.args...)
		if r.err == nil || !strings.Contains(r.stderr, tc.want) || strings.Count(r.stderr, "\n") != 0 {
			t.Errorf("%v: %v\n%s", tc.args, r.err, r.stderr)
		}
	}
	assertLaptopRestored(t, before)
}

// A workload teleport writes the workload's environment to a file; a local
// copy of the workload started with it reaches its downstreams by the
// names its spec uses, through teleport. The file goes when teleport ends.
func TestTeleportWorkloadRunsLocally(t *testing.T) {
	before := snapshotLaptop(t)
	dir := t.TempDir()
	envFile := dir + "/core.env"
	p := startOnLaptop(t, machine(t), "kubectl-cz", "-n", demoNamespace, "teleport", "deployment", "core", "--env-file", envFile)
	p.waitFor("teleport active", 60*time.Second)
	b, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(envFile); st.Mode().Perm() != 0o600 {
		t.Errorf("env file mode %v: it may hold Secrets, want 0600", st.Mode().Perm())
	}
	for _, want := range []string{"ROLE=core\n", "POD_NAMESPACE=sample-project\n", "DOWNSTREAMS="} {
		if !strings.Contains(string(b), want) {
			t.Errorf("env file lacks %q:\n%s", want, b)
		}
	}
	// The local core, with the cluster's environment (its own address and
	// an empty seed folder instead of the pod's).
	local := startOnLaptop(t, nil, "sh", "-c", `set -a; . "$1"; set +a; LISTEN=127.0.0.1:3300 SEED_DIR="$2" POD_NAME=laptop exec cz-demo`, "sh", envFile, dir)
	local.waitFor("listening", 20*time.Second)
	r := onLaptop(t, 20*time.Second, "curl", "-sS", "-m", "15", "http://127.0.0.1:3300/")
	if r.err != nil || !strings.Contains(r.stdout, `"pod":"laptop"`) || !strings.Contains(r.stdout, `"service":"leaf"`) || !strings.Contains(r.stdout, `"pod":"db-0"`) {
		t.Fatalf("the local core did not reach leaf and db through teleport: %v %s\n%s", r.err, r.stderr, r.stdout)
	}
	local.signal(syscall.SIGKILL)
	p.signal(syscall.SIGTERM)
	if err := p.wait(30 * time.Second); err != nil {
		t.Fatalf("exit: %v\n%s", err, p.output())
	}
	if _, err := os.Stat(envFile); !os.IsNotExist(err) {
		t.Errorf("the env file is still there after teleport ended (%v)", err)
	}
	assertLaptopRestored(t, before)
}

// The cluster's DNS domain comes from --cluster-domain (else from the
// cluster, else cluster.local): names under it answer, and the resolver
// searches it; a domain that is no DNS name is one line.
func TestTeleportClusterDomain(t *testing.T) {
	before := snapshotLaptop(t)
	p := startOnLaptop(t, machine(t), "kubectl-cz", "-n", demoNamespace, "teleport", "namespace", "--cluster-domain", "corp.internal")
	p.waitFor("teleport active", 60*time.Second)
	if s := snapshotLaptop(t); !strings.Contains(s.resolv, "sample-project.svc.corp.internal") {
		t.Errorf("resolv.conf does not search the domain:\n%s", s.resolv)
	}
	if got, err := servedBy(t, "http://core.sample-project.svc.corp.internal/"); err != nil || !strings.HasPrefix(got, "core ") {
		t.Errorf("core under the cluster domain: %q %v", got, err)
	}
	p.signal(syscall.SIGTERM)
	if err := p.wait(30 * time.Second); err != nil {
		t.Fatalf("exit: %v\n%s", err, p.output())
	}
	assertLaptopRestored(t, before)
	r := onLaptop(t, 30*time.Second, "kubectl-cz", "-n", demoNamespace, "teleport", "namespace", "--cluster-domain", "Not A Domain")
	if r.err == nil || !strings.Contains(r.stderr, `cluster domain "Not A Domain" is not a DNS name`) || strings.Count(r.stderr, "\n") != 0 {
		t.Errorf("a bad domain: %v %q", r.err, r.stderr)
	}
	assertLaptopRestored(t, before)
}

// TestHelperHalfClose is run by other tests inside the laptop namespace:
// it sends a request to $CZ_E2E_HALF_CLOSE, half-closes, and prints the
// answer.
func TestHelperHalfClose(t *testing.T) {
	addr := os.Getenv("CZ_E2E_HALF_CLOSE")
	if addr == "" {
		t.Skip("run by the teleport tests")
	}
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET /ping HTTP/1.0\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	answer, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("%s\n", answer)
}
