//go:build e2e

package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// roles reads deploy/rbac.yaml, the Roles a platform team binds.
func roles(t *testing.T) map[string]rbacv1.Role {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]rbacv1.Role{}
	for _, doc := range strings.Split(string(b), "\n---\n") {
		var r rbacv1.Role
		if err := yaml.UnmarshalStrict([]byte(doc), &r); err != nil {
			t.Fatalf("deploy/rbac.yaml: %v", err)
		}
		if r.Kind != "Role" {
			t.Fatalf("deploy/rbac.yaml: a %q", r.Kind)
		}
		out[r.Name] = r
	}
	return out
}

// Each primitive runs, end to end, as a ServiceAccount bound to nothing but
// its Role from deploy/rbac.yaml, in the restricted demo namespace: the
// manifest holds every right it needs.
func TestEveryPrimitiveWithItsRoleOnly(t *testing.T) {
	cs := clientset(t)
	all := roles(t)
	as := func(t *testing.T, role string) []string {
		r, ok := all["kubectl-cz-"+role]
		if !ok {
			t.Fatalf("deploy/rbac.yaml has no Role kubectl-cz-%s", role)
		}
		sa := "cz-role-" + role
		grantRole(t, cs, sa, r.Rules...)
		flags := []string{"--as", "system:serviceaccount:" + demoNamespace + ":" + sa, "-n", demoNamespace}
		// RBAC is cached briefly by the authorizer: wait until the Role applies.
		first := r.Rules[0]
		waitUntil(t, 15*time.Second, func() bool {
			return onLaptop(t, 30*time.Second, "kubectl", append(flags, "auth", "can-i", first.Verbs[0], first.Resources[0])...).err == nil
		})
		return flags
	}

	t.Run("env", func(t *testing.T) {
		flags := as(t, "env")
		r := onLaptop(t, 60*time.Second, "kubectl-cz", append(flags, "env", "deployment/core", "-o", "env")...)
		for _, want := range []string{"ROLE=core\n", "POD_NAME=core-", "POD_NAMESPACE=" + demoNamespace + "\n"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("env as its Role lacks %q:\n%s\n%s", want, r.stdout, r.stderr)
			}
		}
	})

	t.Run("teleport", func(t *testing.T) {
		flags := as(t, "teleport")
		before := snapshotLaptop(t)
		p := startOnLaptop(t, machine(t), "kubectl-cz", append(flags, "teleport", "deployment", "core", "--env-file", filepath.Join(t.TempDir(), "core.env"))...)
		p.waitFor("teleport active", 60*time.Second)
		if got, err := servedBy(t, "http://leaf/"); err != nil || !strings.HasPrefix(got, "leaf ") {
			t.Errorf("through teleport as its Role: %q %v", got, err)
		}
		p.signal(syscall.SIGTERM)
		if err := p.wait(30 * time.Second); err != nil {
			t.Fatalf("teleport exit: %v\n%s", err, p.output())
		}
		if after := snapshotLaptop(t); after != before {
			t.Error("teleport left the laptop changed")
		}
	})

	t.Run("intercept", func(t *testing.T) {
		flags := as(t, "intercept")
		before := guardService(t, cs, "core")
		startLocal(t, "laptop-core", 18095)
		p := startOnLaptop(t, machine(t), "kubectl", append([]string{"cz"}, append(flags, "intercept", "service", "core", "--local-port", "18095", "--header", "x-cz-intercept=rbac")...)...)
		p.waitFor("intercept active", 60*time.Second)
		waitServedBy(t, frontendIP(t, cs), "laptop-core", "x-cz-intercept", "rbac")
		stopIntercept(t, p)
		if !bytes.Equal(serviceSnapshot(t, cs, "core"), before) {
			t.Error("the Service is not back as it was")
		}
		assertNoInterceptor(t, cs)
	})

	t.Run("mount", func(t *testing.T) {
		flags := as(t, "mount")
		pod := filesTarget(t, cs)
		dir := t.TempDir()
		p := startInLaptopNet(t, machine(t), "kubectl-cz", append(flags, "mount", "pod", pod, dir, "--agent-pull-policy", "Never")...)
		p.waitFor("mounted after", 90*time.Second)
		if b, err := os.ReadFile(filepath.Join(dir, "work", "seed.txt")); err != nil || string(b) != "seed\n" {
			t.Errorf("read through the mount as its Role: %q %v", b, err)
		}
		p.signal(syscall.SIGTERM)
		if err := p.wait(30 * time.Second); err != nil {
			t.Fatalf("mount exit: %v\n%s", err, p.output())
		}
	})

	// One right short: one line naming it, before anything changes.
	for _, tc := range []struct {
		role, drop string
		args       []string
	}{
		{"teleport", "pods/portforward", []string{"teleport", "namespace"}},
		{"mount", "pods/ephemeralcontainers", []string{"mount", "deployment", "core", "/tmp"}},
		{"intercept", "pods/portforward", []string{"intercept", "service", "core", "--local-port", "18096"}},
	} {
		t.Run(tc.role+" without "+tc.drop, func(t *testing.T) {
			var rules []rbacv1.PolicyRule
			for _, r := range all["kubectl-cz-"+tc.role].Rules {
				if r.Resources[0] != tc.drop {
					rules = append(rules, r)
				}
			}
			sa := "cz-short-" + tc.role
			grantRole(t, cs, sa, rules...)
			flags := []string{"--as", "system:serviceaccount:" + demoNamespace + ":" + sa, "-n", demoNamespace}
			want := "needs create on " + tc.drop
			if tc.drop == "pods/ephemeralcontainers" {
				want = "needs update on " + tc.drop
			}
			var r result
			waitUntil(t, 15*time.Second, func() bool {
				r = onLaptop(t, 60*time.Second, "kubectl-cz", append(flags, tc.args...)...)
				return strings.Contains(r.stderr, want)
			})
			if r.err == nil || strings.Count(r.stderr, "\n") != 0 || !strings.Contains(r.stderr, "nothing was changed") {
				t.Fatalf("%v: want one line saying %q:\n%s", r.err, want, r.stderr)
			}
		})
	}
}
