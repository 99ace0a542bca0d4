//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// demoEnvironment is the repository's environment file for the demo.
func demoEnvironment(t *testing.T) string { return filepath.Join(repoRoot(t), "demo", "cz.yaml") }

// upEnv is a machine with the variables demo/cz.yaml reads: a mount
// folder of the test's own and the developer's header value.
func upEnv(t *testing.T) ([]string, string) {
	env := machine(t)
	dir := filepath.Join(t.TempDir(), "core-volumes")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return append(env, "CZ_MOUNT_DIR="+dir, "CZ_DEVELOPER=me"), dir
}

type hop struct {
	Service, Pod string
	Calls        []hop
}

// frontendHop asks the frontend by its cluster name from the laptop, so
// the request goes through teleport, and returns the call tree.
func frontendHop(t *testing.T, header ...string) hop {
	t.Helper()
	args := []string{"-sS", "-m", "15"}
	if len(header) > 0 {
		args = append(args, "-H", header[0])
	}
	r := onLaptop(t, 20*time.Second, "curl", append(args, "http://frontend/")...)
	var h hop
	if r.err != nil || json.Unmarshal([]byte(r.stdout), &h) != nil {
		t.Fatalf("curl frontend %v: %v %s %s", header, r.err, r.stderr, r.stdout)
	}
	return h
}

// startUp runs `kubectl cz up -f demo/cz.yaml` and waits until the whole
// environment is active; it returns the process and its session.
func startUp(t *testing.T, env []string) (*proc, string) {
	t.Helper()
	p := startOnLaptop(t, env, "kubectl", "cz", "up", "-f", demoEnvironment(t))
	line := p.waitFor("session ", 60*time.Second)
	id := strings.Fields(strings.TrimPrefix(line, "session "))[0]
	p.waitFor("environment core-on-my-laptop active", 120*time.Second)
	return p, id
}

// The demo's environment from one file, in one process: teleport of the
// namespace, a mount of core's volume, a header intercept of core and a
// local core with core's environment. With the header, a request from the
// laptop goes frontend (cluster) -> core (laptop) -> leaf and db (cluster),
// the first time, with no retry; without it, it stays in the cluster. The
// local core sees the pod's volume through the mount. Ctrl-C puts the
// Service back byte for byte, and the laptop's files and addresses.
func TestUpComposesTheDemoEnvironment(t *testing.T) {
	cs := clientset(t)
	beforeLaptop := snapshotLaptop(t)
	beforeCore := guardService(t, cs, "core")
	env, dir := upEnv(t)

	up, id := startUp(t, env)
	for _, want := range []string{"[1/4] teleport namespace sample-project: active", "[2/4] mount deployment/core", "[3/4] intercept service core: active", "[4/4] run core: active"} {
		if !strings.Contains(up.output(), want) {
			t.Errorf("progress lacks %q:\n%s", want, up.output())
		}
	}
	h := frontendHop(t, "x-cz-intercept: me")
	if h.Service != "frontend" || len(h.Calls) != 1 || h.Calls[0].Pod != "my-laptop" {
		t.Fatalf("with the header, core should be the laptop's at once: %+v\n%s", h, up.output())
	}
	var below []string
	for _, c := range h.Calls[0].Calls {
		below = append(below, c.Service+"/"+c.Pod)
	}
	if len(below) != 2 || !strings.HasPrefix(below[0], "leaf/leaf-") || below[1] != "db/db-0" {
		t.Fatalf("the laptop's core should reach the cluster's leaf and db: %v", below)
	}
	// Without the header, the cluster's core. Once in a full run (1 of 3
	// today) frontend's first call to core right after an earlier test's
	// intercept ended got no answer; the next did: that call is retried for
	// 5 s and logged, not taken as the environment's routing.
	cluster := func(h hop) bool { return len(h.Calls) == 1 && strings.HasPrefix(h.Calls[0].Pod, "core-") }
	if h := frontendHop(t); !cluster(h) {
		t.Logf("without the header, a first call did not reach the cluster's core: %+v", h)
		deadline := time.Now().Add(5 * time.Second)
		for !cluster(h) && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
			h = frontendHop(t)
		}
		if !cluster(h) {
			t.Fatalf("without the header, core should be the cluster's: %+v", h)
		}
	}
	// The mount lives in the plugin's mount namespace (ip netns exec gives
	// it one): look through its root.
	settings := fmt.Sprintf("/proc/%d/root%s/data/config/settings.yaml", up.cmd.Process.Pid, dir)
	if b, err := os.ReadFile(settings); err != nil || !strings.Contains(string(b), "greeting: hello from core") {
		t.Errorf("core's volume through the mount: %q %v", b, err)
	}

	// What the environment altered, drawn on the graph and in the session.
	var g graphJSON
	if err := json.Unmarshal([]byte(graphOf(t, env, "json")), &g); err != nil {
		t.Fatal(err)
	}
	demoCalls(t, g)
	roles := map[string]bool{}
	for _, s := range g.Services {
		for _, a := range s.Alterations {
			if s.Name != "core" {
				t.Errorf("%s altered: %+v", s.Name, a)
			}
			roles[a.Role] = true
		}
	}
	for _, role := range []string{"intercepted", "developer", "mounted", "member", "standin"} {
		if !roles[role] {
			t.Errorf("core is not shown %s: %v", role, roles)
		}
	}
	if len(g.Teleported) != 1 || g.Teleported[0].Session != id {
		t.Errorf("the teleport is not drawn: %+v", g.Teleported)
	}
	showEnvironment(t, env, id)

	mounted := holdMountNamespace(t, up.cmd.Process.Pid)
	if !mounted(dir) {
		t.Fatalf("%s is not in the plugin's mount table", dir)
	}
	up.signal(syscall.SIGTERM)
	if err := up.wait(60 * time.Second); err != nil {
		t.Fatalf("up exit: %v\n%s", err, up.output())
	}
	for _, want := range []string{"[4/4] run core: stopping", "last developer left: restoring service core", "unmounted " + dir} {
		if !strings.Contains(up.output(), want) {
			t.Errorf("the stop lacks %q:\n%s", want, up.output())
		}
	}
	// Reverse order: the local core stops before the intercept leaves.
	if out := up.output(); strings.Index(out, "[4/4] run core: stopping") > strings.Index(out, "[3/4] intercept service core: stopping") {
		t.Errorf("parts did not stop in reverse order:\n%s", out)
	}
	assertRestored(t, cs, "core", beforeCore, interceptSession)
	assertRestored(t, cs, "core", beforeCore, id)
	assertLaptopRestored(t, beforeLaptop)
	if mounted(dir) {
		t.Errorf("%s is still mounted in the plugin's mount namespace", dir)
	}
	if r := onLaptop(t, 10*time.Second, "curl", "-sS", "-m", "5", "http://127.0.0.1:3400/ping"); r.err == nil {
		t.Errorf("the local core still answers after the environment stopped")
	}
}

// kill -9 of `kubectl cz up`: its local process dies with it, and a
// session close from another machine (another HOME) restores the cluster:
// the intercepted Service, since no developer remains on its interceptor,
// and the mount's Secret. The laptop's own next command puts its files
// and addresses back.
func TestUpKilledThenClosedFromAnotherMachine(t *testing.T) {
	cs := clientset(t)
	beforeLaptop := snapshotLaptop(t)
	beforeCore := guardService(t, cs, "core")
	env, _ := upEnv(t)

	up, id := startUp(t, env)
	up.signal(syscall.SIGKILL)
	up.wait(10 * time.Second)
	waitUntil(t, 10*time.Second, func() bool {
		return onLaptop(t, 10*time.Second, "curl", "-sS", "-m", "2", "http://127.0.0.1:3400/ping").err != nil
	})

	r := cz(t, machine(t), "-n", demoNamespace, "session", "close", id)
	if r.err != nil {
		t.Fatalf("close from another machine: %v\n%s", r.err, r.stdout)
	}
	if !strings.Contains(r.stdout, "nobody intercepts service core any more") {
		t.Errorf("the close should say why it removed the interceptor:\n%s", r.stdout)
	}
	assertRestored(t, cs, "core", beforeCore, interceptSession)
	assertRestored(t, cs, "core", beforeCore, id)
	// The laptop side: the next command on the crashed machine.
	if r := cz(t, env, "-n", demoNamespace, "session", "list"); r.err != nil || !strings.Contains(r.stdout, "recovered session "+id) {
		t.Errorf("the next command should undo the laptop side: %v\n%s", r.err, r.stdout)
	}
	assertLaptopRestored(t, beforeLaptop)
}

// A file with a typo is refused with its line and field, before anything
// changes: no session, no journal, the Service as it was.
func TestUpRefusesATypoWithLineAndField(t *testing.T) {
	cs := clientset(t)
	before := serviceSnapshot(t, cs, "core")
	text, err := os.ReadFile(demoEnvironment(t))
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(text), "    localPort: 3400", "    locaPort: 3400", 1)
	line := 1 + strings.Count(bad[:strings.Index(bad, "locaPort")], "\n")
	file := filepath.Join(t.TempDir(), "cz.yaml")
	if err := os.WriteFile(file, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	env, _ := upEnv(t)
	p := startOnLaptop(t, env, "kubectl", "cz", "up", "-f", file)
	if err := p.wait(30 * time.Second); err == nil {
		t.Fatalf("a typo was accepted:\n%s", p.output())
	}
	want := fmt.Sprintf("error: %s:%d: unknown field \"locaPort\"", file, line)
	if out := strings.TrimSpace(p.output()); out != want {
		t.Errorf("got %q, want the one line %q", out, want)
	}
	if after := serviceSnapshot(t, cs, "core"); string(after) != string(before) {
		t.Errorf("the Service changed")
	}
	if _, err := cs.CoreV1().ConfigMaps(demoNamespace).Get(context.Background(), "cz-session-"+interceptSession, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("a journal exists: %v", err)
	}
}

// --dry-run prints what each part would change and asks the API server for
// every right: as a ServiceAccount with the teleport and mount Roles but
// not intercept's, it names the first right intercept lacks, exits with an
// error, and changes nothing.
func TestUpDryRunChangesNothingAndNamesAMissingRight(t *testing.T) {
	cs := clientset(t)
	all := roles(t)
	before := serviceSnapshot(t, cs, "core")
	journals := func() int {
		list, err := cs.CoreV1().ConfigMaps(demoNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=kubectl-cz"})
		if err != nil {
			t.Fatal(err)
		}
		return len(list.Items)
	}
	journalsBefore := journals()
	rules := append(append(all["kubectl-cz-teleport"].Rules, all["kubectl-cz-mount"].Rules...), all["kubectl-cz-env"].Rules...)
	grantRole(t, cs, "cz-up-dry-run", rules...)
	as := []string{"--as", "system:serviceaccount:" + demoNamespace + ":cz-up-dry-run"}
	waitUntil(t, 15*time.Second, func() bool {
		return onLaptop(t, 30*time.Second, "kubectl", append(as, "-n", demoNamespace, "auth", "can-i", "update", "pods", "--subresource", "ephemeralcontainers")...).err == nil
	})
	env, dir := upEnv(t)
	p := startOnLaptop(t, env, "kubectl", append([]string{"cz"}, append(as, "up", "-f", demoEnvironment(t), "--dry-run")...)...)
	if err := p.wait(60 * time.Second); err == nil {
		t.Fatalf("a missing right passed the dry run:\n%s", p.output())
	}
	out := p.output()
	for _, want := range []string{
		"(dry run: nothing changes)",
		"patch Service sample-project/core: spec.selector and spec.ports",
		"add ephemeral container cz-files-",
		"mount the volumes of container core at " + dir,
		"admitted by the API server (server-side dry run)", // the mount, whose rights are all there
		"kubectl cz intercept needs create on services in namespace sample-project",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "      cannot start:") {
		t.Errorf("a part lacking a right was dry-run into RBAC's refusal instead of naming the right:\n%s", out)
	}
	if strings.Contains(out, "teleport needs") || strings.Contains(out, "mount needs") {
		t.Errorf("granted rights reported missing:\n%s", out)
	}
	if after := serviceSnapshot(t, cs, "core"); string(after) != string(before) {
		t.Errorf("the dry run changed the Service")
	}
	if n := journals(); n != journalsBefore {
		t.Errorf("the dry run left journals: %d before, %d after", journalsBefore, n)
	}
	// Nothing on this machine either: no local journal was started.
	for _, kv := range env {
		if d, ok := strings.CutPrefix(kv, "KUBECTL_CZ_STATE_DIR="); ok {
			if left, _ := filepath.Glob(filepath.Join(d, "sessions", "*")); len(left) > 0 {
				t.Errorf("the dry run wrote a local journal: %v", left)
			}
		}
	}
}

// graphOf runs `kubectl cz graph` on the demo namespace in a format.
func graphOf(t *testing.T, env []string, format string) string {
	t.Helper()
	r := cz(t, env, "-n", demoNamespace, "graph", "-o", format)
	if r.err != nil {
		t.Fatalf("graph -o %s: %v\n%s", format, r.err, r.stdout)
	}
	return r.stdout
}

// renders checks that Graphviz draws a DOT text.
func renders(t *testing.T, dot string) {
	t.Helper()
	cmd := exec.Command("dot", "-Tsvg")
	cmd.Stdin = strings.NewReader(dot)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "<svg") {
		t.Errorf("graphviz cannot draw it: %v %s\n%s", err, out, dot)
	}
}

type graphJSON struct {
	Namespace string
	Services  []struct {
		Name        string
		Workloads   []string
		Alterations []struct{ Session, Role, Text string }
	}
	Calls []struct {
		From, To string
		Where    []string
	}
	Teleported []struct{ Session string }
}

// demoCalls are the calls the demo's manifests name (DOWNSTREAMS of
// frontend and core), as graph -o json reports them.
func demoCalls(t *testing.T, g graphJSON) {
	t.Helper()
	var calls []string
	for _, c := range g.Calls {
		calls = append(calls, c.From+"->"+c.To+" "+strings.Join(c.Where, ";"))
	}
	want := []string{
		"core->db deployment/core container core env DOWNSTREAMS",
		"core->leaf deployment/core container core env DOWNSTREAMS",
		"frontend->core deployment/frontend container frontend env DOWNSTREAMS",
	}
	if strings.Join(calls, "\n") != strings.Join(want, "\n") {
		t.Errorf("calls:\n%s\nwant\n%s", strings.Join(calls, "\n"), strings.Join(want, "\n"))
	}
}

// The demo's graph in every format, checked against the manifests' edges.
func TestGraphOfTheDemo(t *testing.T) {
	env := machine(t)
	var g graphJSON
	if err := json.Unmarshal([]byte(graphOf(t, env, "json")), &g); err != nil {
		t.Fatal(err)
	}
	demoCalls(t, g)
	var names []string
	for _, s := range g.Services {
		names = append(names, s.Name+"="+strings.Join(s.Workloads, ","))
		if len(s.Alterations) > 0 {
			t.Errorf("no session runs, yet %s is altered: %v", s.Name, s.Alterations)
		}
	}
	if got := strings.Join(names, " "); got != "core=deployment/core db=statefulset/db frontend=deployment/frontend leaf=deployment/leaf" {
		t.Errorf("services: %s", got)
	}
	if y := graphOf(t, env, "yaml"); !strings.Contains(y, "kind: ServiceGraph") || !strings.Contains(y, "from: frontend") {
		t.Errorf("yaml:\n%s", y)
	}
	text := graphOf(t, env, "text")
	for _, want := range []string{"namespace sample-project: 4 services, 3 calls", "frontend -> core", "deployment/core container core env DOWNSTREAMS"} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}
	renders(t, graphOf(t, env, "dot"))
	m := graphOf(t, env, "mermaid")
	for _, want := range []string{"flowchart LR", "n_svc_frontend -->", "| n_svc_core", "| n_svc_leaf", "| n_svc_db"} {
		if !strings.Contains(m, want) {
			t.Errorf("mermaid lacks %q:\n%s", want, m)
		}
	}
	if r := cz(t, env, "-n", demoNamespace, "graph", "-o", "png"); r.err == nil || !strings.Contains(r.stdout, `-o "png": want one of`) {
		t.Errorf("a bad format: %v %s", r.err, r.stdout)
	}
}

// showEnvironment checks `session show` of an environment in every format:
// its entries in journal order, and its graph with the intercept it joined.
func showEnvironment(t *testing.T, env []string, id string) {
	t.Helper()
	show := func(format string) string {
		r := cz(t, env, "session", "show", id, "-o", format)
		if r.err != nil {
			t.Fatalf("session show -o %s: %v\n%s", format, r.err, r.stdout)
		}
		return r.stdout
	}
	var d struct {
		ID      string
		Entries []struct {
			Seq        int64
			Kind, Text string
		}
		Graphs []graphJSON
	}
	if err := json.Unmarshal([]byte(show("json")), &d); err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for i, e := range d.Entries {
		if i > 0 && e.Seq <= d.Entries[i-1].Seq {
			t.Errorf("entries out of journal order: %+v", d.Entries)
		}
		if len(kinds) == 0 || kinds[len(kinds)-1] != e.Kind {
			kinds = append(kinds, e.Kind)
		}
	}
	order := strings.Join(kinds, " ")
	for _, want := range []string{"teleport.namespaces teleport.address", "object.created mount.agent", "mount.fuse intercept.member run.process"} {
		if !strings.Contains(order, want) {
			t.Errorf("entries %q lack %q in order", order, want)
		}
	}
	if d.ID != id || len(d.Graphs) != 1 {
		t.Fatalf("session show: id %s, %d graphs", d.ID, len(d.Graphs))
	}
	demoCalls(t, d.Graphs[0])
	roles := map[string]bool{}
	for _, s := range d.Graphs[0].Services {
		for _, a := range s.Alterations {
			roles[a.Role] = true
		}
	}
	if !roles["intercepted"] || !roles["developer"] || !roles["standin"] {
		t.Errorf("the environment's graph lacks its intercept: %v", roles)
	}
	if y := show("yaml"); !strings.Contains(y, "kind: Session") || !strings.Contains(y, "kind: intercept.member") {
		t.Errorf("yaml:\n%s", y)
	}
	if text := show("text"); !strings.Contains(text, "takes part in the intercept of service core") || !strings.Contains(text, "core: stand-in: runs core here") {
		t.Errorf("text:\n%s", text)
	}
	renders(t, show("dot"))
	if m := show("mermaid"); !strings.Contains(m, "class n_svc_core intercepted") || !strings.Contains(m, "-.->|\"stands in\"|") {
		t.Errorf("mermaid:\n%s", m)
	}
}

// An environment shares a Service with a developer already on it: its
// intercept joins the interceptor, each header reaches its own laptop
// process, and stopping the environment leaves the other developer's
// intercept working (at once: the environment settled its share itself),
// until they leave last and the Service is restored.
func TestUpSharesAnInterceptedService(t *testing.T) {
	cs := clientset(t)
	before := guardService(t, cs, "core")
	ip := frontendIP(t, cs)
	startLocal(t, "laptop-bob", 3002)
	bob := startIntercept(t, machine(t), "--local-port", "3002", "--header", "x-cz-intercept=bob")

	env, _ := upEnv(t)
	up, _ := startUp(t, env)
	if !strings.Contains(up.output(), "joining its interceptor") {
		t.Errorf("the environment did not join bob's interceptor:\n%s", up.output())
	}
	waitServedBy(t, ip, "my-laptop", "x-cz-intercept", "me")
	waitServedBy(t, ip, "laptop-bob", "x-cz-intercept", "bob")

	stopped := time.Now()
	up.signal(syscall.SIGTERM)
	if err := up.wait(60 * time.Second); err != nil {
		t.Fatalf("up exit: %v\n%s", err, up.output())
	}
	if d := time.Since(stopped); d > 8*time.Second {
		t.Errorf("stopping the environment took %s:\n%s", d, up.output())
	}
	if !strings.Contains(up.output(), "1 other developer(s) still intercept service core") {
		t.Errorf("the environment's leave:\n%s", up.output())
	}
	waitServedBy(t, ip, "laptop-bob", "x-cz-intercept", "bob")
	stopIntercept(t, bob)
	assertRestored(t, cs, "core", before, interceptSession)
}
