//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// `kubectl cz version` through kubectl's plugin mechanism, from the laptop,
// against the real API server.
func TestVersionThroughKubectlPlugin(t *testing.T) {
	r := onLaptop(t, 30*time.Second, "kubectl", "cz", "version", "-o", "json")
	if r.err != nil {
		t.Fatalf("kubectl cz version: %v: %s", r.err, r.stderr)
	}
	var v struct {
		ClientVersion struct{ Version, GoVersion string } `json:"clientVersion"`
		ServerVersion struct{ GitVersion string }         `json:"serverVersion"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, r.stdout)
	}
	if v.ServerVersion.GitVersion != kubeVersion {
		t.Errorf("server version %q, want %q", v.ServerVersion.GitVersion, kubeVersion)
	}
	if !strings.HasPrefix(v.ClientVersion.Version, "v") || v.ClientVersion.GoVersion == "" {
		t.Errorf("client version %+v", v.ClientVersion)
	}

	text := onLaptop(t, 30*time.Second, "kubectl", "cz", "version")
	if text.err != nil || !strings.Contains(text.stdout, "Server Version: "+kubeVersion) {
		t.Errorf("text output %q (err %v, %s)", text.stdout, text.err, text.stderr)
	}
}

// `kubectl cz <TAB>` completes through kubectl: subcommands, and the
// Services a developer can intercept, read from the cluster.
func TestKubectlCompletion(t *testing.T) {
	r := onLaptop(t, 30*time.Second, "kubectl", "__complete", "cz", "se")
	if r.err != nil || !strings.Contains(r.stdout, "session\t") {
		t.Fatalf("subcommands: %v %q %s", r.err, r.stdout, r.stderr)
	}
	r = onLaptop(t, 30*time.Second, "kubectl", "__complete", "cz", "-n", demoNamespace, "intercept", "service", "")
	for _, svc := range []string{"frontend", "core", "leaf"} {
		if !strings.Contains(r.stdout, svc+"\n") {
			t.Errorf("intercept service completion lacks %s: %q (%v %s)", svc, r.stdout, r.err, r.stderr)
		}
	}
}

// A bad kubeconfig choice is one clear line and a failing exit code.
func TestVersionBadContextIsOneLineError(t *testing.T) {
	r := onLaptop(t, 30*time.Second, "kubectl", "cz", "version", "--context", "no-such-context")
	if r.err == nil {
		t.Fatal("want a failure for an unknown context")
	}
	if lines := strings.Split(r.stderr, "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "error: ") || !strings.Contains(lines[0], "no-such-context") {
		t.Fatalf("stderr %q: want one line naming the context", r.stderr)
	}
}

// The demo graph answers with the path frontend -> core -> (leaf, db), each
// hop served by a running pod of that service, and the routing headers reach
// every hop.
func TestDemoGraphRequestPath(t *testing.T) {
	ctx := context.Background()
	cs := clientset(t)
	svc, err := cs.CoreV1().Services(demoNamespace).Get(ctx, "frontend", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("demo graph not deployed (make demo-deploy): %v", err)
	}
	pods, err := cs.CoreV1().Pods(demoNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	podOf := map[string]string{} // pod name -> service role
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning {
			podOf[p.Name] = p.Labels["app.kubernetes.io/name"]
		}
	}

	// The host is "inside" the cluster network: it reaches the ClusterIP.
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://%s/", svc.Spec.ClusterIP), nil)
	req.Header.Set("x-cz-intercept", "e2e")
	req.Header.Set("baggage", "cz-intercept=e2e,other=1")
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	type hop struct {
		Service, Pod, Error string
		Headers             map[string]string
		Calls               []hop
	}
	var root hop
	if err := json.NewDecoder(resp.Body).Decode(&root); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, decode %v, path %+v", resp.StatusCode, err, root)
	}
	var walk func(h hop, want string)
	seen := map[string]bool{}
	walk = func(h hop, want string) {
		if h.Service != want || h.Error != "" {
			t.Errorf("hop %+v, want service %s", h, want)
		}
		if podOf[h.Pod] != want {
			t.Errorf("hop %s served by %q, not a running %s pod", want, h.Pod, want)
		}
		if h.Headers["x-cz-intercept"] != "e2e" || h.Headers["baggage"] != "cz-intercept=e2e,other=1" {
			t.Errorf("hop %s saw headers %v: want both propagated", want, h.Headers)
		}
		seen[want] = true
	}
	walk(root, "frontend")
	if len(root.Calls) != 1 {
		t.Fatalf("frontend calls %+v, want core", root.Calls)
	}
	core := root.Calls[0]
	walk(core, "core")
	if len(core.Calls) != 2 {
		t.Fatalf("core calls %+v, want leaf and db", core.Calls)
	}
	walk(core.Calls[0], "leaf")
	walk(core.Calls[1], "db")
	if len(seen) != 4 {
		t.Errorf("saw %v", seen)
	}
}

// The laptop namespace reaches the API server and nothing else of the
// cluster: no pod IP, no ClusterIP, not the kubelet on the node address.
// Its resolver file is its own, not this machine's.
func TestLaptopReachesOnlyTheAPIServer(t *testing.T) {
	ctx := context.Background()
	cs := clientset(t)
	if r := onLaptop(t, 20*time.Second, "kubectl", "get", "--raw", "/readyz"); r.err != nil || strings.TrimSpace(r.stdout) != "ok" {
		t.Fatalf("API server from the laptop: %q %v %s", r.stdout, r.err, r.stderr)
	}
	svc, err := cs.CoreV1().Services(demoNamespace).Get(ctx, "frontend", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pods, err := cs.CoreV1().Pods(demoNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=frontend"})
	if err != nil || len(pods.Items) == 0 || pods.Items[0].Status.PodIP == "" {
		t.Fatalf("no frontend pod: %v", err)
	}
	node, err := cs.CoreV1().Nodes().Get(ctx, "cz-node", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nodeIP := ""
	for _, a := range node.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			nodeIP = a.Address
		}
	}
	targets := map[string]string{
		"pod IP":    pods.Items[0].Status.PodIP + "/8080",
		"ClusterIP": svc.Spec.ClusterIP + "/80",
		"kubelet":   nodeIP + "/10250",
	}
	// From the host all three answer, so a failure on the laptop is the
	// namespace's doing, not a dead target.
	for what, target := range targets {
		if err := tcpProbe(ctx, false, target); err != nil {
			t.Fatalf("%s %s unreachable from the host too: %v", what, target, err)
		}
		if err := tcpProbe(ctx, true, target); err == nil {
			t.Errorf("%s %s is reachable from the laptop namespace", what, target)
		}
	}
	hostResolv, _ := os.ReadFile("/etc/resolv.conf")
	r := onLaptop(t, 10*time.Second, "cat", "/etc/resolv.conf")
	if r.err != nil || r.stdout == string(hostResolv) || !strings.Contains(r.stdout, "laptop namespace") {
		t.Errorf("laptop resolv.conf %q: want the namespace's own file", r.stdout)
	}
}

// tcpProbe opens a TCP connection to host/port (bash's /dev/tcp syntax) from
// the host or from the laptop namespace, giving up after 3 s.
func tcpProbe(ctx context.Context, laptop bool, target string) error {
	args := []string{"timeout", "3", "bash", "-c", "exec 3<>/dev/tcp/" + target}
	if laptop {
		args = append([]string{"ip", "netns", "exec", laptopNetns}, args...)
	}
	out, err := execContext(ctx, args...)
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}
