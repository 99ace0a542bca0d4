//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-cz/kubectl-cz/session"
)

// forgeJournal writes a ConfigMap shaped like a session journal, as any
// tenant who may create ConfigMaps in a namespace could.
func forgeJournal(t *testing.T, cs kubernetes.Interface, ns, id string, entries ...session.Entry) {
	t.Helper()
	meta, _ := json.Marshal(session.Meta{Version: 1, ID: id, Owner: session.Owner{User: "mallory", Host: "elsewhere", PID: 1}, Created: time.Now().UTC().Truncate(time.Second)})
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: session.JournalName(id), Namespace: ns,
		Labels: map[string]string{session.LabelManagedBy: session.ManagedBy, session.LabelSession: id}},
		Data: map[string]string{"session": string(meta)}}
	for i, e := range entries {
		e.Seq, e.State, e.Time, e.Owner = int64(i+1), session.Applied, time.Now().UTC(), session.Owner{User: "mallory", Host: "elsewhere", PID: 1}
		b, _ := json.Marshal(e)
		cm.Data[fmt.Sprintf("entry-%d", e.Seq)] = string(b)
	}
	ctx := context.Background()
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.CoreV1().ConfigMaps(ns).Delete(context.Background(), cm.Name, metav1.DeleteOptions{}) })
}

// The attack: a tenant writes journals that, closed by an
// administrator's `session gc -A` or `session close --force`, would retarget
// a Service (in their namespace or another), delete a Deployment, or write
// a file on the administrator's machine. Nothing changes; each says why.
func TestForgedJournalsChangeNothing(t *testing.T) {
	ctx := context.Background()
	cs := clientset(t)
	before := guardService(t, cs, "leaf")
	leaf, err := cs.CoreV1().Services(demoNamespace).Get(ctx, "leaf", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	frontend, err := cs.AppsV1().Deployments(demoNamespace).Get(ctx, "frontend", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tenant := "cz-tenant"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: tenant}}, metav1.CreateOptions{}); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.CoreV1().Namespaces().Delete(context.Background(), tenant, metav1.DeleteOptions{}) })

	selector, _ := json.Marshal(leaf.Spec.Selector)
	leafRef := map[string]any{"version": "v1", "resource": "services", "kind": "Service", "namespace": demoNamespace, "name": "leaf", "uid": leaf.UID}
	retarget, _ := json.Marshal(map[string]any{"object": leafRef, "fields": []map[string]any{{"path": []string{"spec", "selector"}, "original": map[string]string{"app": "mallory"}, "patched": json.RawMessage(selector)}}})
	kill, _ := json.Marshal(map[string]any{"object": map[string]any{"group": "apps", "version": "v1", "resource": "deployments", "kind": "Deployment", "namespace": demoNamespace, "name": "frontend", "uid": frontend.UID}})
	pwned := filepath.Join(t.TempDir(), "pwned")
	file, _ := json.Marshal(map[string]any{"path": pwned, "saved": filepath.Join(filepath.Dir(pwned), ".pwned.cz-saved-1"), "writtenSHA256": "", "mode": 0o644})

	forgeJournal(t, cs, demoNamespace, "forged-retarget", session.Entry{Kind: session.KindPatched, Primitive: "intercept", Namespace: demoNamespace, Data: retarget})
	forgeJournal(t, cs, tenant, "forged-elsewhere", session.Entry{Kind: session.KindPatched, Primitive: "intercept", Namespace: tenant, Data: retarget})
	forgeJournal(t, cs, demoNamespace, "forged-laptop", session.Entry{Kind: "teleport.file", Primitive: "teleport", Namespace: demoNamespace, Data: file})
	forgeJournal(t, cs, demoNamespace, "forged-delete", session.Entry{Kind: session.KindCreated, Primitive: "intercept", Namespace: demoNamespace, Data: kill})
	// An environment's share of an intercept, pointed at another session:
	// its undo would close that session.
	member, _ := json.Marshal(map[string]string{"service": "leaf", "session": "forged-retarget"})
	forgeJournal(t, cs, demoNamespace, "forged-member", session.Entry{Kind: "intercept.member", Primitive: "intercept", Namespace: demoNamespace, Data: member})
	process, _ := json.Marshal(map[string]any{"name": "x", "command": []string{"sh"}})
	forgeJournal(t, cs, demoNamespace, "forged-process", session.Entry{Kind: "run.process", Primitive: "run", Namespace: demoNamespace, Data: process})
	// The other laptop kinds: unmount a folder, take an address off this
	// machine, a block out of its resolver.
	unmount, _ := json.Marshal(map[string]string{"dir": "/"})
	forgeJournal(t, cs, demoNamespace, "forged-unmount", session.Entry{Kind: "mount.fuse", Primitive: "mount", Namespace: demoNamespace, Data: unmount})
	address, _ := json.Marshal(map[string]string{"ip": "10.220.0.1", "link": "lo"})
	forgeJournal(t, cs, demoNamespace, "forged-address", session.Entry{Kind: "teleport.address", Primitive: "teleport", Namespace: demoNamespace, Data: address})
	block, _ := json.Marshal(map[string]string{"path": "/etc/resolv.conf", "id": "x", "tag": "nameserver"})
	forgeJournal(t, cs, demoNamespace, "forged-block", session.Entry{Kind: "teleport.block", Primitive: "teleport", Namespace: demoNamespace, Data: block})

	env := machine(t)
	unchanged := func(step string) {
		t.Helper()
		if !bytes.Equal(serviceSnapshot(t, cs, "leaf"), before) {
			t.Fatalf("%s: a forged journal changed Service leaf", step)
		}
		if d, err := cs.AppsV1().Deployments(demoNamespace).Get(ctx, "frontend", metav1.GetOptions{}); err != nil || d.UID != frontend.UID {
			t.Fatalf("%s: a forged journal deleted Deployment frontend (%v)", step, err)
		}
		if _, err := os.Stat(pwned); err == nil {
			t.Fatalf("%s: a forged journal wrote a file on this machine", step)
		}
	}

	// Without --force, someone else's session is refused for that alone.
	r := cz(t, env, "-n", demoNamespace, "session", "close", "forged-retarget")
	if r.err == nil || !strings.Contains(r.stdout, "belongs to mallory@elsewhere") {
		t.Fatalf("close of another user's session: %v\n%s", r.err, r.stdout)
	}
	unchanged("close")
	for id, why := range map[string]string{
		"forged-retarget": "does not carry this session's mark",
		"forged-laptop":   "only this machine's local journal",
		"forged-member":   `naming session "forged-retarget", not service leaf's`,
		"forged-process":  "only this machine's local journal",
		"forged-unmount":  "only this machine's local journal",
		"forged-address":  "only this machine's local journal",
		"forged-block":    "only this machine's local journal",
	} {
		r := cz(t, env, "-n", demoNamespace, "session", "close", id, "--force")
		errLine := lastLines(r.stdout, "error:")
		if r.err == nil || !strings.Contains(errLine, why) || strings.Count(strings.TrimSpace(errLine), "\n") != 0 {
			t.Errorf("close --force of %s: %v, want one line saying %q:\n%s", id, r.err, why, r.stdout)
		}
		unchanged("close --force " + id)
	}
	r = cz(t, env, "session", "gc", "-A", "--expiry", "1s")
	for _, want := range []string{"does not carry this session's mark", "not in the journal's namespace", "only this machine's local journal", "kept deployment " + demoNamespace + "/frontend"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("gc -A: no %q in:\n%s", want, r.stdout)
		}
	}
	if r.err == nil {
		t.Errorf("gc -A over forged journals succeeded:\n%s", r.stdout)
	}
	unchanged("gc -A")
}
