//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// The session tests drive the cztest build of the plugin (.cz/bin/kubectl-cz-test):
// the real plugin plus a hidden test primitive that creates a ConfigMap,
// patches a Service's selector and overwrites a local file, through the
// session package, and can stop dead right after a chosen journal step.

func testPlugin(t testing.TB) string {
	p := filepath.Join(repoRoot(t), ".cz", "bin", "kubectl-cz-test")
	if !exists(p) {
		t.Fatal("the cztest build is missing: run `make test-e2e`")
	}
	return p
}

// machine is the environment of one "laptop": its own HOME and state folder.
// Two machines share the kubeconfig and nothing else.
func machine(t testing.TB) []string {
	dir := t.TempDir()
	return []string{"HOME=" + dir, "KUBECTL_CZ_STATE_DIR=" + filepath.Join(dir, "state")}
}

// serviceSnapshot is the part of a Service a session may touch: spec,
// labels and annotations, as the API server returns them.
func serviceSnapshot(t testing.TB, cs kubernetes.Interface, name string) []byte {
	t.Helper()
	svc, err := cs.CoreV1().Services(demoNamespace).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(map[string]any{"spec": svc.Spec, "labels": svc.Labels, "annotations": svc.Annotations})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// guardService puts a Service's selector back after the test if a failure
// left it altered, so one failing test does not break the next.
func guardService(t *testing.T, cs kubernetes.Interface, name string) []byte {
	before := serviceSnapshot(t, cs, name)
	svc, err := cs.CoreV1().Services(demoNamespace).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	selector := svc.Spec.Selector
	t.Cleanup(func() {
		if bytes.Equal(serviceSnapshot(t, cs, name), before) {
			return
		}
		cur, err := cs.CoreV1().Services(demoNamespace).Get(context.Background(), name, metav1.GetOptions{})
		if err == nil {
			cur.Spec.Selector = selector
			_, _ = cs.CoreV1().Services(demoNamespace).Update(context.Background(), cur, metav1.UpdateOptions{})
		}
	})
	return before
}

func selectorOf(t testing.TB, cs kubernetes.Interface, name string) map[string]string {
	svc, err := cs.CoreV1().Services(demoNamespace).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return svc.Spec.Selector
}

func configMapExists(t testing.TB, cs kubernetes.Interface, name string) bool {
	_, err := cs.CoreV1().ConfigMaps(demoNamespace).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	return err == nil
}

// startPrimitive runs the test primitive on a Service and returns it with its
// session id once it printed `want` ("ready", or "stopped at ...").
func startPrimitive(t *testing.T, env []string, service, localFile, stopAt, want string) (*proc, string) {
	args := []string{"-n", demoNamespace, "test-primitive", "--service", service}
	if localFile != "" {
		args = append(args, "--local-file", localFile)
	}
	if stopAt != "" {
		args = append(args, "--stop-at", stopAt)
	}
	p := startOnLaptop(t, env, testPlugin(t), args...)
	id := strings.TrimPrefix(p.waitFor("session ", 30*time.Second), "session ")
	p.waitFor(want, 30*time.Second)
	return p, id
}

// crashedPrimitive runs the test primitive on a Service until it is ready,
// then kills it with SIGKILL: a session left behind by a crash.
func crashedPrimitive(t *testing.T, env []string, service string) string {
	p, id := startPrimitive(t, env, service, "", "", "ready")
	p.signal(syscall.SIGKILL)
	p.wait(10 * time.Second)
	return id
}

// cz runs a one-shot plugin command on the laptop as the given machine.
func cz(t testing.TB, env []string, args ...string) result {
	t.Helper()
	p := startOnLaptop(t, env, testPlugin(t), args...)
	err := p.wait(60 * time.Second)
	out := p.output()
	return result{stdout: out, stderr: out, err: err}
}

func assertRestored(t *testing.T, cs kubernetes.Interface, service string, before []byte, id string) {
	t.Helper()
	if after := serviceSnapshot(t, cs, service); !bytes.Equal(after, before) {
		t.Errorf("Service %s not restored byte for byte:\nbefore %s\nafter  %s", service, before, after)
	}
	if configMapExists(t, cs, "cz-test-"+id) {
		t.Errorf("the ConfigMap the session created survived")
	}
	if configMapExists(t, cs, "cz-session-"+id) {
		t.Errorf("the session journal survived")
	}
}

// Ctrl-C (SIGTERM) on a running primitive undoes everything it did: the
// Service's spec, labels and annotations are byte-identical, the created
// ConfigMap and the journal are gone, the local file has its old content,
// and in-cluster traffic reaches the original pods again.
func TestSessionCloseOnSignalRestoresExactly(t *testing.T) {
	cs := clientset(t)
	before := guardService(t, cs, "leaf")
	local := filepath.Join(t.TempDir(), "settings.txt")
	os.WriteFile(local, []byte("mine\n"), 0o644)

	p, id := startPrimitive(t, machine(t), "leaf", local, "", "ready")
	if got := selectorOf(t, cs, "leaf"); got["cz-test"] != id {
		t.Fatalf("selector while active: %v", got)
	}
	if !configMapExists(t, cs, "cz-test-"+id) || !configMapExists(t, cs, "cz-session-"+id) {
		t.Fatal("created ConfigMap or journal missing while active")
	}
	journal, _ := cs.CoreV1().ConfigMaps(demoNamespace).Get(context.Background(), "cz-session-"+id, metav1.GetOptions{})
	created, _ := cs.CoreV1().ConfigMaps(demoNamespace).Get(context.Background(), "cz-test-"+id, metav1.GetOptions{})
	if refs := created.OwnerReferences; len(refs) != 1 || refs[0].UID != journal.UID {
		t.Errorf("created object's owner references %+v: want the journal %s", refs, journal.UID)
	}
	if journal.Labels["app.kubernetes.io/managed-by"] != "kubectl-cz" || journal.Annotations["cz.dev/heartbeat"] == "" {
		t.Errorf("journal labels %v annotations %v", journal.Labels, journal.Annotations)
	}

	p.signal(syscall.SIGTERM)
	if err := p.wait(30 * time.Second); err != nil {
		t.Fatalf("exit: %v\n%s", err, p.output())
	}
	assertRestored(t, cs, "leaf", before, id)
	if b, _ := os.ReadFile(local); string(b) != "mine\n" {
		t.Errorf("local file %q after close", b)
	}
	// Traffic to leaf reaches its pods again (frontend -> core -> leaf), once
	// the EndpointSlice controller and kube-proxy have caught up with the
	// selector: three answers in a row (one 200 was once followed by a 502
	// while the rules still moved).
	svc, _ := cs.CoreV1().Services(demoNamespace).Get(context.Background(), "frontend", metav1.GetOptions{})
	waitUntil(t, 15*time.Second, func() bool {
		for range 3 {
			resp, err := http.Get("http://" + svc.Spec.ClusterIP + "/")
			if err != nil {
				return false
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return false
			}
		}
		return true
	})
	TestDemoGraphRequestPath(t)
}

// kill -9 at each journal step, then close from a fresh process on another
// "machine" (another HOME and state folder): the cluster side comes back.
// The first machine's next command undoes its laptop-side entry.
func TestSessionCrashThenCloseFromAnotherMachine(t *testing.T) {
	cs := clientset(t)
	for _, stopAt := range []string{"record:2", "applied:2", "record:3", "applied:3"} {
		t.Run(strings.ReplaceAll(stopAt, ":", "-"), func(t *testing.T) {
			before := guardService(t, cs, "leaf")
			laptop, other := machine(t), machine(t)
			local := filepath.Join(t.TempDir(), "settings.txt")
			os.WriteFile(local, []byte("mine\n"), 0o644)

			p, id := startPrimitive(t, laptop, "leaf", local, stopAt, "stopped at "+stopAt)
			p.signal(syscall.SIGKILL)
			p.wait(10 * time.Second)

			r := cz(t, other, "-n", demoNamespace, "session", "close", id)
			if r.err != nil {
				t.Fatalf("close from another machine: %v\n%s", r.err, r.stdout)
			}
			assertRestored(t, cs, "leaf", before, id)

			// Back on the crashed laptop: any command undoes the local change.
			r = cz(t, laptop, "-n", demoNamespace, "session", "list")
			if r.err != nil {
				t.Fatalf("list: %v\n%s", r.err, r.stdout)
			}
			if b, _ := os.ReadFile(local); string(b) != "mine\n" {
				t.Errorf("local file %q after recovery (%s)", b, r.stdout)
			}
			if strings.Contains(stopAt, ":3") && !strings.Contains(r.stdout, "recovered session "+id) {
				t.Errorf("no recovery reported:\n%s", r.stdout)
			}
		})
	}
}

func TestTwoSessionsCloseIndependently(t *testing.T) {
	cs := clientset(t)
	beforeLeaf := guardService(t, cs, "leaf")
	beforeCore := guardService(t, cs, "core")
	env := machine(t)
	a := crashedPrimitive(t, env, "leaf")
	b := crashedPrimitive(t, env, "core")
	r := cz(t, env, "-n", demoNamespace, "session", "list", "-o", "json")
	for _, id := range []string{a, b} {
		if !strings.Contains(r.stdout, `"name": "`+id+`"`) {
			t.Fatalf("session %s not listed:\n%s", id, r.stdout)
		}
	}
	names := cz(t, env, "-n", demoNamespace, "session", "list", "-o", "name")
	ids := cz(t, env, "-n", demoNamespace, "session", "list", "-o", "jsonpath={.items[*].metadata.name}")
	for _, id := range []string{a, b} {
		if !strings.Contains(names.stdout, "session.cz.dev/"+id+"\n") || !strings.Contains(ids.stdout, id) {
			t.Fatalf("session %s: -o name %q, -o jsonpath %q", id, names.stdout, ids.stdout)
		}
	}
	if r := cz(t, env, "-n", demoNamespace, "session", "close", a); r.err != nil {
		t.Fatalf("close %s: %v\n%s", a, r.err, r.stdout)
	}
	assertRestored(t, cs, "leaf", beforeLeaf, a)
	if got := selectorOf(t, cs, "core"); got["cz-test"] != b || !configMapExists(t, cs, "cz-session-"+b) {
		t.Fatalf("closing %s disturbed %s: core selector %v", a, b, got)
	}
	if r := cz(t, env, "-n", demoNamespace, "session", "close", b); r.err != nil {
		t.Fatalf("close %s: %v\n%s", b, r.err, r.stdout)
	}
	assertRestored(t, cs, "core", beforeCore, b)
}

// Someone edits the Service after the session did: close stops with one
// line, changes nothing; --force puts the original back.
func TestSessionConflictThenForce(t *testing.T) {
	ctx := context.Background()
	cs := clientset(t)
	before := guardService(t, cs, "leaf")
	env := machine(t)
	id := crashedPrimitive(t, env, "leaf")

	svc, _ := cs.CoreV1().Services(demoNamespace).Get(ctx, "leaf", metav1.GetOptions{})
	svc.Spec.Selector = map[string]string{"edited-by": "someone-else"}
	if _, err := cs.CoreV1().Services(demoNamespace).Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	r := cz(t, env, "-n", demoNamespace, "session", "close", id)
	if r.err == nil || !strings.Contains(r.stdout, "changed by someone else") || !strings.Contains(r.stdout, "--force") {
		t.Fatalf("close over a conflict: %v\n%s", r.err, r.stdout)
	}
	if lines := strings.Count(strings.TrimSpace(lastLines(r.stdout, "error:")), "\n"); lines != 0 {
		t.Errorf("error is not one line:\n%s", r.stdout)
	}
	if got := selectorOf(t, cs, "leaf"); got["edited-by"] != "someone-else" {
		t.Fatalf("a refused close changed the Service: %v", got)
	}
	if r := cz(t, env, "-n", demoNamespace, "session", "close", "--force", id); r.err != nil {
		t.Fatalf("forced close: %v\n%s", r.err, r.stdout)
	}
	assertRestored(t, cs, "leaf", before, id)
}

// lastLines returns the output from the first line starting with prefix.
func lastLines(out, prefix string) string {
	if i := strings.Index(out, prefix); i >= 0 {
		return out[i:]
	}
	return ""
}

// A journal edited into garbage: close says so in one line and changes nothing.
func TestCorruptJournalChangesNothing(t *testing.T) {
	ctx := context.Background()
	cs := clientset(t)
	before := guardService(t, cs, "leaf")
	env := machine(t)
	id := crashedPrimitive(t, env, "leaf")

	journal, err := cs.CoreV1().ConfigMaps(demoNamespace).Get(ctx, "cz-session-"+id, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	good := journal.DeepCopy()
	for k := range journal.Data {
		if strings.HasPrefix(k, "entry-") {
			journal.Data[k] = "{this is not json"
			break
		}
	}
	if journal, err = cs.CoreV1().ConfigMaps(demoNamespace).Update(ctx, journal, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	patched := serviceSnapshot(t, cs, "leaf")
	r := cz(t, env, "-n", demoNamespace, "session", "close", id)
	errLine := lastLines(r.stdout, "error:")
	if r.err == nil || !strings.Contains(errLine, "corrupt") || strings.Count(strings.TrimSpace(errLine), "\n") != 0 {
		t.Fatalf("close of a corrupt journal: %v\n%s", r.err, r.stdout)
	}
	if !bytes.Equal(serviceSnapshot(t, cs, "leaf"), patched) || !configMapExists(t, cs, "cz-test-"+id) {
		t.Fatal("a corrupt journal's close changed something")
	}
	// Repaired, it closes.
	good.ResourceVersion = journal.ResourceVersion
	if _, err := cs.CoreV1().ConfigMaps(demoNamespace).Update(ctx, good, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if r := cz(t, env, "-n", demoNamespace, "session", "close", id); r.err != nil {
		t.Fatalf("close after repair: %v\n%s", r.err, r.stdout)
	}
	assertRestored(t, cs, "leaf", before, id)
}

// With only namespace-scoped RBAC (a Role, no ClusterRole) a developer can
// run a primitive and close the session; without ConfigMap rights, the
// primitive stops with one clear line and leaves nothing behind.
func TestNamespaceScopedRBAC(t *testing.T) {
	ctx := context.Background()
	cs := clientset(t)
	before := guardService(t, cs, "leaf")
	grantRole(t, cs, "cz-dev",
		rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list", "create", "update", "delete"}},
		rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"services"}, Verbs: []string{"get", "update"}})
	grantRole(t, cs, "cz-nobody")
	// RBAC is cached briefly by the authorizer: wait until the role applies.
	waitUntil(t, 10*time.Second, func() bool {
		return cz(t, machine(t), "-n", demoNamespace, "--as", "system:serviceaccount:sample-project:cz-dev", "session", "list").err == nil
	})

	as := []string{"--as", "system:serviceaccount:sample-project:cz-dev"}
	env := machine(t)
	p := startOnLaptop(t, env, testPlugin(t), append(as, "-n", demoNamespace, "test-primitive", "--service", "leaf")...)
	id := strings.TrimPrefix(p.waitFor("session ", 30*time.Second), "session ")
	p.waitFor("ready", 30*time.Second)
	r := cz(t, env, append(as, "-n", demoNamespace, "session", "list", "-o", "json")...)
	if r.err != nil || !strings.Contains(r.stdout, `"user": "system:serviceaccount:sample-project:cz-dev"`) {
		t.Fatalf("list as cz-dev: %v\n%s", r.err, r.stdout)
	}
	if r := cz(t, env, append(as, "session", "list", "-A")...); r.err == nil || !strings.Contains(r.stdout, "forbidden") {
		t.Errorf("list -A without cluster rights: %v\n%s", r.err, r.stdout)
	}
	p.signal(syscall.SIGTERM)
	if err := p.wait(30 * time.Second); err != nil {
		t.Fatalf("exit: %v\n%s", err, p.output())
	}
	assertRestored(t, cs, "leaf", before, id)

	// No rights on ConfigMaps: nothing may change.
	r = cz(t, machine(t), "--as", "system:serviceaccount:sample-project:cz-nobody", "-n", demoNamespace, "test-primitive", "--service", "leaf")
	errLine := lastLines(r.stdout, "error:")
	if r.err == nil || !strings.Contains(errLine, "forbidden") || !strings.Contains(errLine, "configmaps") || strings.Count(strings.TrimSpace(errLine), "\n") != 0 {
		t.Fatalf("primitive without rights: %v\n%s", r.err, r.stdout)
	}
	if !bytes.Equal(serviceSnapshot(t, cs, "leaf"), before) {
		t.Fatal("a refused primitive changed the Service")
	}
	list, _ := cs.CoreV1().ConfigMaps(demoNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=kubectl-cz"})
	if len(list.Items) != 0 {
		t.Fatalf("journals left behind: %d", len(list.Items))
	}
}

// gc closes a session whose heartbeat stopped, and never one whose owner runs.
func TestSessionGC(t *testing.T) {
	cs := clientset(t)
	beforeLeaf := guardService(t, cs, "leaf")
	guardService(t, cs, "core")
	env := machine(t)
	deadID := crashedPrimitive(t, env, "leaf")
	live, liveID := startPrimitive(t, env, "core", "", "", "ready")

	// Too recent a heartbeat: gc leaves even the dead owner's session alone.
	if r := cz(t, env, "-n", demoNamespace, "session", "gc", "--expiry", "1h"); r.err != nil || strings.Contains(r.stdout, "closed") {
		t.Fatalf("gc with a long expiry: %v\n%s", r.err, r.stdout)
	}
	time.Sleep(2 * time.Second)
	r := cz(t, env, "-n", demoNamespace, "session", "gc", "--expiry", "1s")
	if r.err != nil || !strings.Contains(r.stdout, "session "+deadID+" closed") || strings.Contains(r.stdout, liveID) {
		t.Fatalf("gc: %v\n%s", r.err, r.stdout)
	}
	assertRestored(t, cs, "leaf", beforeLeaf, deadID)
	if got := selectorOf(t, cs, "core"); got["cz-test"] != liveID {
		t.Fatalf("gc touched the live session: core selector %v", got)
	}
	live.signal(syscall.SIGTERM)
	if err := live.wait(30 * time.Second); err != nil {
		t.Fatal(err)
	}
}

func waitUntil(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %s", d)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// grantRole makes a ServiceAccount of that name in the demo namespace, bound
// to a namespaced Role with these rules (none: a user with no rights), for
// the length of the test.
func grantRole(t *testing.T, cs kubernetes.Interface, name string, rules ...rbacv1.PolicyRule) {
	ctx := context.Background()
	_, err := cs.CoreV1().ServiceAccounts(demoNamespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if len(rules) == 0 {
		return
	}
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}
	binding := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: demoNamespace}}}
	if _, err := cs.RbacV1().Roles(demoNamespace).Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().RoleBindings(demoNamespace).Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.RbacV1().RoleBindings(demoNamespace).Delete(ctx, name, metav1.DeleteOptions{})
		_ = cs.RbacV1().Roles(demoNamespace).Delete(ctx, name, metav1.DeleteOptions{})
	})
}
