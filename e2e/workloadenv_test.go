//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

const envNamespace = "cz-e2e-env"

// tricky is a value every output format has to carry: quotes of both
// kinds, a line break, $, a backquote and a backslash.
const tricky = "it's \"quoted\" $HOME `x` \\ \nsecond line"

// envWorkload makes a namespace with a Deployment whose container uses
// every way of getting an environment, and returns its running pod's name.
func envWorkload(t *testing.T, cs kubernetes.Interface) string {
	t.Helper()
	ctx := context.Background()
	_ = cs.CoreV1().Namespaces().Delete(ctx, envNamespace, metav1.DeleteOptions{})
	waitUntil(t, 60*time.Second, func() bool {
		_, err := cs.CoreV1().Namespaces().Get(ctx, envNamespace, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: envNamespace}}, metav1.CreateOptions{}))
	t.Cleanup(func() {
		_ = cs.CoreV1().Namespaces().Delete(context.Background(), envNamespace, metav1.DeleteOptions{})
	})
	must(cs.CoreV1().ConfigMaps(envNamespace).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "app-config"},
		Data: map[string]string{"LOG_LEVEL": "debug", "TRICKY": tricky, "dotted.key": "d"}}, metav1.CreateOptions{}))
	must(cs.CoreV1().Secrets(envNamespace).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "app-secret"},
		StringData: map[string]string{"password": "s3cr'et"}}, metav1.CreateOptions{}))
	// Services of the namespace give link variables; a headless one none.
	must(cs.CoreV1().Services(envNamespace).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "api-server"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "none"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80}, {Name: "grpc", Port: 9090}}}}, metav1.CreateOptions{}))
	must(cs.CoreV1().Services(envNamespace).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "headless"},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: map[string]string{"app": "none"}, Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{}))

	optional := true
	fromField := func(path string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}
	}
	labels := map[string]string{"app": "envtest"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "app"},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name:            "main",
					Image:           "kubectl-cz.local/toolbox:dev",
					ImagePullPolicy: corev1.PullIfNotPresent,
					Command:         []string{"sleep", "3600"},
					EnvFrom: []corev1.EnvFromSource{
						{Prefix: "CFG_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"}}},
						{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "app-secret"}}},
						{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}, Optional: &optional}},
					},
					Env: []corev1.EnvVar{
						{Name: "CFG_LOG_LEVEL", Value: "info"}, // replaces envFrom's value
						{Name: "DB_URL", Value: "postgres://$(API_SERVER_SERVICE_HOST):$(API_SERVER_SERVICE_PORT_GRPC)/app?pw=$(password)&level=$(CFG_LOG_LEVEL)"},
						{Name: "LITERAL", Value: "$$(CFG_LOG_LEVEL) $(UNDEFINED) $(LATER) 100$"},
						{Name: "LATER", Value: "later"},
						{Name: "POD_NAME", ValueFrom: fromField("metadata.name")},
						{Name: "POD_NAMESPACE", ValueFrom: fromField("metadata.namespace")},
						{Name: "POD_IP", ValueFrom: fromField("status.podIP")},
						{Name: "NODE", ValueFrom: fromField("spec.nodeName")},
						{Name: "APP_LABEL", ValueFrom: fromField("metadata.labels['app']")},
						{Name: "CPU_MILLIS", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "requests.cpu", Divisor: resource.MustParse("1m")}}},
						{Name: "MEM_LIMIT_MI", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}}},
						{Name: "MEM_REQUEST", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "requests.memory"}}},
						{Name: "PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "app-secret"}, Key: "password"}}},
						{Name: "MISSING_OPTIONAL", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"}, Key: "nope", Optional: &optional}}},
					},
					Resources: corev1.ResourceRequirements{
						Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("15m")},
						Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("48Mi")},
					},
				}}},
			},
		},
	}
	must(cs.AppsV1().Deployments(envNamespace).Create(ctx, dep, metav1.CreateOptions{}))
	var pod string
	waitUntil(t, 90*time.Second, func() bool {
		pods, err := cs.CoreV1().Pods(envNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=envtest"})
		if err != nil || len(pods.Items) != 1 || pods.Items[0].Status.Phase != corev1.PodRunning {
			return false
		}
		pod = pods.Items[0].Name
		return true
	})
	return pod
}

// containerEnv is the environment the container's process really has.
func containerEnv(t *testing.T, pod string) map[string]string {
	t.Helper()
	r := onLaptop(t, 30*time.Second, "kubectl", "-n", envNamespace, "exec", pod, "--", "cat", "/proc/1/environ")
	if r.err != nil {
		t.Fatalf("exec: %v: %s", r.err, r.stderr)
	}
	env := map[string]string{}
	for _, kv := range strings.Split(strings.TrimRight(r.stdout, "\x00"), "\x00") {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	return env
}

// The environment `kubectl cz env` prints is the one the kubelet gave the
// container, variable for variable.
func TestEnvMatchesTheContainer(t *testing.T) {
	cs := clientset(t)
	pod := envWorkload(t, cs)
	real := containerEnv(t, pod)

	r := onLaptop(t, 30*time.Second, "kubectl", "cz", "-n", envNamespace, "env", "deployment", "app", "-o", "json")
	if r.err != nil {
		t.Fatalf("kubectl cz env: %v: %s", r.err, r.stderr)
	}
	var got map[string]string
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("-o json: %v\n%s", err, r.stdout)
	}
	for k, v := range got {
		if rv, ok := real[k]; !ok || rv != v {
			t.Errorf("%s: printed %q, the container has %q (present %v)", k, v, rv, ok)
		}
	}
	// What the container has beyond that comes from the image and the
	// runtime, not from the pod spec.
	for k, v := range real {
		if _, ok := got[k]; !ok && k != "PATH" && k != "HOSTNAME" && k != "HOME" {
			t.Errorf("%s=%q is in the container but not printed", k, v)
		}
	}
	// Spot checks, so a resolver and a kubelet that agree on nothing fail too.
	for k, want := range map[string]string{"CFG_LOG_LEVEL": "info", "CFG_TRICKY": tricky, "LITERAL": "$(CFG_LOG_LEVEL) $(UNDEFINED) $(LATER) 100$",
		"POD_NAME": pod, "APP_LABEL": "envtest", "CPU_MILLIS": "15", "MEM_LIMIT_MI": "48", "MEM_REQUEST": "50331648", "PASSWORD": "s3cr'et"} {
		if got[k] != want {
			t.Errorf("%s = %q, want %q", k, got[k], want)
		}
	}
	for _, k := range []string{"API_SERVER_SERVICE_PORT_GRPC", "KUBERNETES_SERVICE_HOST", "POD_IP", "NODE"} {
		if got[k] == "" {
			t.Errorf("%s missing", k)
		}
	}
	if _, ok := got["HEADLESS_SERVICE_HOST"]; ok {
		t.Error("a headless Service got link variables")
	}
	if _, ok := got["MISSING_OPTIONAL"]; ok {
		t.Error("an optional reference to a missing key was printed")
	}

	// -o sh: a shell that sources it gets the same values, tricky ones too.
	r = onLaptop(t, 30*time.Second, "kubectl", "cz", "-n", envNamespace, "env", "deploy/app")
	if r.err != nil {
		t.Fatalf("-o sh: %v: %s", r.err, r.stderr)
	}
	file := filepath.Join(t.TempDir(), "app.sh")
	if err := os.WriteFile(file, []byte(r.stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"CFG_TRICKY", "PASSWORD", "DB_URL", "LITERAL"} {
		out, err := exec.Command("sh", "-c", `. "$1" && eval "v=\$$2" && printf %s "$v"`, "sh", file, k).Output()
		if err != nil || string(out) != got[k] {
			t.Errorf("sourced %s: %q (%v), want %q", k, out, err, got[k])
		}
	}
	if strings.Contains(r.stdout, "CFG_dotted.key") || !strings.Contains(r.stderr, "CFG_dotted.key") {
		t.Errorf("a name the shell cannot export must be left out and said:\n%s", r.stderr)
	}

	// -o docker cannot carry a line break: one line naming the variable.
	r = onLaptop(t, 30*time.Second, "kubectl", "cz", "-n", envNamespace, "env", "deploy/app", "-o", "docker")
	if r.err == nil || !strings.Contains(r.stderr, "CFG_TRICKY") || strings.Count(r.stderr, "\n") != 0 || r.stdout != "" {
		t.Errorf("-o docker with a multi-line value: %v\nstdout %q\nstderr %q", r.err, r.stdout, r.stderr)
	}
}

// Unknown names and missing rights get one line each.
func TestEnvErrors(t *testing.T) {
	ctx := context.Background()
	cs := clientset(t)
	envWorkload(t, cs)
	oneLine := func(r result, want ...string) {
		t.Helper()
		if r.err == nil || strings.Count(r.stderr, "\n") != 0 || r.stdout != "" {
			t.Errorf("want one error line and no output: %v\nstdout %q\nstderr %q", r.err, r.stdout, r.stderr)
		}
		for _, w := range want {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("error %q does not say %q", r.stderr, w)
			}
		}
	}
	oneLine(onLaptop(t, 30*time.Second, "kubectl", "cz", "-n", envNamespace, "env", "deployment", "nope"), `deployment "nope" not found`)
	oneLine(onLaptop(t, 30*time.Second, "kubectl", "cz", "-n", envNamespace, "env", "deployment", "app", "-c", "other"), "container other is not valid for pod", "out of: main")
	oneLine(onLaptop(t, 30*time.Second, "kubectl", "cz", "-n", envNamespace, "env", "daemonset", "app"), "not a workload kind")

	// A user who may read the workload but not its Secret.
	sa := "env-reader"
	if _, err := cs.CoreV1().ServiceAccounts(envNamespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: sa}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"get"}},
		{APIGroups: []string{""}, Resources: []string{"pods", "services", "configmaps"}, Verbs: []string{"get", "list"}},
	}}
	binding := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: sa},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: sa},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: envNamespace}}}
	if _, err := cs.RbacV1().Roles(envNamespace).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().RoleBindings(envNamespace).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	as := "system:serviceaccount:" + envNamespace + ":" + sa
	var r result
	waitUntil(t, 10*time.Second, func() bool {
		r = onLaptop(t, 30*time.Second, "kubectl", "cz", "--as", as, "-n", envNamespace, "env", "deployment", "app")
		return strings.Contains(r.stderr, "secret")
	})
	oneLine(r, `secret "app-secret"`, "RBAC", "get on secrets")
}
