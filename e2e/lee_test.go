//go:build e2e

package e2e

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The whole story, on the laptop alone: a workload teleport of core gives
// its environment and the cluster's names; a local core runs with them; an
// intercept sends core's requests carrying the developer's header to it. A
// request with the header, sent from the laptop to frontend by name, goes
// frontend (cluster) -> core (laptop) -> leaf and db (cluster); without the
// header it never leaves the cluster. Afterwards the cluster's Service and
// the laptop are as they were.
func TestLogicalEphemeralEnvironment(t *testing.T) {
	cs := clientset(t)
	beforeLaptop := snapshotLaptop(t)
	beforeCore := guardService(t, cs, "core")
	env := machine(t)
	dir := t.TempDir()

	tp := startOnLaptop(t, env, "kubectl", "cz", "-n", demoNamespace, "teleport", "deployment", "core", "--env-file", dir+"/core.env")
	tp.waitFor("teleport active", 60*time.Second)
	local := startOnLaptop(t, nil, "sh", "-c", `set -a; . "$1"; set +a; LISTEN=127.0.0.1:3400 SEED_DIR="$2" POD_NAME=my-laptop exec cz-demo`, "sh", dir+"/core.env", dir)
	local.waitFor("listening", 20*time.Second)
	icpt := startIntercept(t, env, "--local-port", "3400", "--header", "x-cz-intercept=me")

	get := func(header ...string) hop { t.Helper(); return frontendHop(t, header...) }
	// kube-proxy takes a moment to send new connections to the interceptor.
	var h hop
	deadline := time.Now().Add(20 * time.Second)
	for h = get("x-cz-intercept: me"); len(h.Calls) == 1 && h.Calls[0].Pod != "my-laptop" && time.Now().Before(deadline); h = get("x-cz-intercept: me") {
		time.Sleep(200 * time.Millisecond)
	}
	if h.Service != "frontend" || len(h.Calls) != 1 || h.Calls[0].Pod != "my-laptop" {
		t.Fatalf("with the header, core should be the laptop's: %+v", h)
	}
	var below []string
	for _, c := range h.Calls[0].Calls {
		below = append(below, c.Service+"/"+c.Pod)
	}
	if len(below) != 2 || !strings.HasPrefix(below[0], "leaf/leaf-") || below[1] != "db/db-0" {
		t.Fatalf("the laptop's core should reach the cluster's leaf and db: %v", below)
	}
	if h := get(); len(h.Calls) != 1 || h.Calls[0].Pod == "my-laptop" || !strings.HasPrefix(h.Calls[0].Pod, "core-") {
		t.Fatalf("without the header, core should be the cluster's: %+v", h)
	}

	stopIntercept(t, icpt)
	local.signal(syscall.SIGKILL)
	tp.signal(syscall.SIGTERM)
	if err := tp.wait(30 * time.Second); err != nil {
		t.Fatalf("teleport exit: %v\n%s", err, tp.output())
	}
	assertRestored(t, cs, "core", beforeCore, interceptSession)
	assertLaptopRestored(t, beforeLaptop)
	if _, err := os.Stat(dir + "/core.env"); !os.IsNotExist(err) {
		t.Errorf("env file left behind: %v", err)
	}
}
