//go:build e2e

package e2e

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// user is a local user who is not root (uid 4242), with a home, a
// kubeconfig of their own and the laptop's network.
type user struct {
	home, kubeconfig string
	env              []string
}

func nonRootUser(t *testing.T) user {
	t.Helper()
	tmp := t.TempDir()
	os.Chmod(filepath.Dir(tmp), 0o755) // t.TempDir's parent is 0700
	os.Chmod(tmp, 0o755)
	u := user{home: filepath.Join(tmp, "home"), kubeconfig: filepath.Join(tmp, "kubeconfig")}
	os.Mkdir(u.home, 0o755)
	b, err := os.ReadFile(kubeconfig(t))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(u.kubeconfig, b, 0o600)
	for _, p := range []string{u.home, u.kubeconfig} {
		os.Chown(p, 4242, 4242)
	}
	u.env = []string{"HOME=" + u.home, "KUBECONFIG=" + u.kubeconfig, "KUBECTL_CZ_STATE_DIR=" + filepath.Join(u.home, "state")}
	return u
}

// start runs argv as the user, in the laptop's network.
func (u user) start(t *testing.T, argv ...string) *proc {
	t.Helper()
	return startCmd(t, u.env, append([]string{"nsenter", "--net=/var/run/netns/" + laptopNetns, "setpriv", "--reuid", "4242", "--regid", "4242", "--clear-groups", "--"}, argv...))
}

// hostState is what a teleport would change on this machine: its own
// resolver and hosts files (kubectl cz run sees these: nsenter, unlike ip
// netns exec, mounts nothing over /etc), and the laptop's addresses.
type hostState struct {
	resolv, hosts string
	laptop        laptopState
}

func snapshotHost(t *testing.T) hostState {
	t.Helper()
	resolv, err1 := os.ReadFile("/etc/resolv.conf")
	hosts, err2 := os.ReadFile("/etc/hosts")
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	return hostState{resolv: string(resolv), hosts: string(hosts), laptop: snapshotLaptop(t)}
}

func exitCodeOf(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err == nil {
		return 0
	}
	return -1
}

// kubectl cz run as a user who is not root: the command reaches the
// cluster's Services by name, and its exit code comes back; this machine's
// files and addresses are the same during and after.
func TestRunWithoutRoot(t *testing.T) {
	u := nonRootUser(t)
	plugin := filepath.Join(repoRoot(t), "bin", "kubectl-cz")
	before := snapshotHost(t)
	p := u.start(t, plugin, "-n", demoNamespace, "run", "--", "sh", "-c", `curl -sS -m 10 http://frontend/ && echo && echo RUNNING && sleep 2 && exit 7`)
	p.waitFor("RUNNING", 60*time.Second)
	if during := snapshotHost(t); during != before {
		t.Errorf("this machine changed while the command ran:\nbefore %+v\nduring %+v", before, during)
	}
	err := p.wait(30 * time.Second)
	if code := exitCodeOf(err); code != 7 {
		t.Errorf("exit code %d (%v), want the command's 7:\n%s", code, err, p.output())
	}
	var h hop
	for _, line := range strings.Split(p.output(), "\n") {
		if strings.HasPrefix(line, "{") {
			if err := json.Unmarshal([]byte(line), &h); err != nil {
				t.Fatal(err)
			}
		}
	}
	if h.Service != "frontend" || len(h.Calls) != 1 || h.Calls[0].Service != "core" || len(h.Calls[0].Calls) != 2 {
		t.Errorf("curl http://frontend/ through the sandbox: %+v\n%s", h, p.output())
	}
	if after := snapshotHost(t); after != before {
		t.Errorf("this machine was changed:\nbefore %+v\nafter  %+v", before, after)
	}
}

// A local core under run --env-from deployment/core reaches the cluster's
// leaf and db by the names core's environment gives.
func TestRunLocalCoreWithItsEnvironment(t *testing.T) {
	u := nonRootUser(t)
	plugin := filepath.Join(repoRoot(t), "bin", "kubectl-cz")
	script := `LISTEN=127.0.0.1:3500 SEED_DIR="$HOME" POD_NAME=sandboxed cz-demo & for i in $(seq 100); do curl -s -m 5 http://127.0.0.1:3500/ && exit 0; sleep 0.1; done; exit 9`
	p := u.start(t, plugin, "-n", demoNamespace, "run", "-q", "--env-from", "deployment/core", "--", "sh", "-c", script)
	if err := p.wait(60 * time.Second); err != nil {
		t.Fatalf("%v\n%s", err, p.output())
	}
	// -q: the command's output alone (cz-demo's log line, then the answer).
	lines := strings.Split(strings.TrimSpace(p.output()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "core (sandboxed) listening") {
		t.Errorf("-q should leave the command's output alone:\n%s", p.output())
	}
	var h hop
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &h); err != nil {
		t.Fatalf("%v\n%s", err, p.output())
	}
	if h.Pod != "sandboxed" || len(h.Calls) != 2 {
		t.Fatalf("the local core: %+v", h)
	}
	for _, c := range h.Calls {
		if (c.Service != "leaf" && c.Service != "db") || c.Pod == "" || c.Pod == "sandboxed" {
			t.Errorf("core's call %+v did not reach the cluster", c)
		}
	}
}

// Signals pass through to the command (SIGTERM to kubectl cz run reaches
// the command's trap), and kill -9 of kubectl cz run ends the command and
// every process it started, leaving nothing on this machine.
func TestRunSignalsAndKill(t *testing.T) {
	u := nonRootUser(t)
	plugin := filepath.Join(repoRoot(t), "bin", "kubectl-cz")
	p := u.start(t, plugin, "-n", demoNamespace, "run", "-q", "--", "sh", "-c", `trap 'echo TERMED; exit 42' TERM; echo READY; while :; do sleep 0.1; done`)
	p.waitFor("READY", 60*time.Second)
	p.signal(syscall.SIGTERM)
	if code := exitCodeOf(p.wait(30 * time.Second)); code != 42 || !strings.Contains(p.output(), "TERMED") {
		t.Errorf("SIGTERM: exit %d, want the trap's 42:\n%s", code, p.output())
	}

	before := snapshotHost(t)
	k := u.start(t, plugin, "-n", demoNamespace, "run", "-q", "--", "sh", "-c", `sleep 3141 & sleep 3142 & echo STARTED; wait`)
	k.waitFor("STARTED", 60*time.Second)
	sleepers := func() string {
		out, _ := exec.Command("pgrep", "-f", "^sleep 314[12]$").Output()
		return strings.TrimSpace(string(out))
	}
	waitUntil(t, 10*time.Second, func() bool { return strings.Count(sleepers(), "\n") == 1 })
	k.signal(syscall.SIGKILL)
	k.wait(10 * time.Second)
	waitUntil(t, 10*time.Second, func() bool { return sleepers() == "" })
	if after := snapshotHost(t); after != before {
		t.Errorf("kill -9 left this machine changed:\nbefore %+v\nafter  %+v", before, after)
	}
}

// Where the kernel allows a user no user namespace, the refusal is one
// line naming the sysctl, before anything starts. The limit is set in a
// user namespace of the test's own (it holds for the namespaces made in
// it), not on this machine.
func TestRunRefusedWithoutUserNamespaces(t *testing.T) {
	plugin := filepath.Join(repoRoot(t), "bin", "kubectl-cz")
	p := startInLaptopNet(t, nil, "unshare", "--user", "--map-user=4242", "--map-group=4242", "--keep-caps", "--", "sh", "-c",
		`echo 0 > /proc/sys/user/max_user_namespaces && exec "$0" -n `+demoNamespace+` run -- true`, plugin)
	err := p.wait(30 * time.Second)
	out := strings.TrimSpace(p.output())
	if err == nil || strings.Count(out, "\n") != 0 || !strings.Contains(out, "user.max_user_namespaces") {
		t.Errorf("want one line naming user.max_user_namespaces: %v\n%s", err, out)
	}
}

// A local core under run, inside an intercept of core: requests with the
// header reach it in its own network (frontend(cluster) -> core(sandbox)
// -> leaf, db(cluster)), those without stay in the cluster; the Service is
// put back byte for byte when the command ends.
func TestRunInsideAnIntercept(t *testing.T) {
	cs := clientset(t)
	before := guardService(t, cs, "core")
	u := nonRootUser(t)
	plugin := filepath.Join(repoRoot(t), "bin", "kubectl-cz")
	script := `LISTEN=127.0.0.1:3600 SEED_DIR="$HOME" POD_NAME=sandboxed cz-demo 2>/dev/null &
for i in $(seq 100); do curl -s -m 2 -o /dev/null http://127.0.0.1:3600/ && break; sleep 0.1; done
# A keep-alive connection frontend opened before the intercept may still
# reach core's pod for a moment (a documented limit): ask again a while.
for i in $(seq 50); do out=$(curl -sS -m 10 -H 'x-cz-intercept: sbx' http://frontend/); case "$out" in *sandboxed*) break;; esac; sleep 0.1; done
echo "$out"
curl -sS -m 10 http://frontend/; echo`
	p := u.start(t, plugin, "-n", demoNamespace, "run", "-q", "--env-from", "deployment/core", "--intercept", "core", "--local-port", "3600",
		"--header", "x-cz-intercept=sbx", "--agent-pull-policy", "Never", "--", "sh", "-c", script)
	if err := p.wait(120 * time.Second); err != nil {
		t.Fatalf("%v\n%s", err, p.output())
	}
	var hops []hop
	for _, line := range strings.Split(p.output(), "\n") {
		var h hop
		if strings.HasPrefix(line, "{") && json.Unmarshal([]byte(line), &h) == nil {
			hops = append(hops, h)
		}
	}
	if len(hops) != 2 {
		t.Fatalf("want two answers:\n%s", p.output())
	}
	with, without := hops[0], hops[1]
	if len(with.Calls) != 1 || with.Calls[0].Pod != "sandboxed" || len(with.Calls[0].Calls) != 2 {
		t.Errorf("with the header, core should be the sandboxed one calling the cluster's leaf and db: %+v", with)
	} else {
		for _, c := range with.Calls[0].Calls {
			if c.Pod == "" || c.Pod == "sandboxed" {
				t.Errorf("the sandboxed core's call %+v did not reach the cluster", c)
			}
		}
	}
	if len(without.Calls) != 1 || without.Calls[0].Pod == "sandboxed" {
		t.Errorf("without the header, core should be the cluster's: %+v", without)
	}
	if after := serviceSnapshot(t, cs, "core"); string(after) != string(before) {
		t.Errorf("service core was not put back:\nbefore %s\nafter  %s", before, after)
	}
}
