package graph

import (
	"bytes"
	"context"
	"os/exec"
	"reflect"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kubectl-cz/kubectl-cz/session"
)

func TestReferences(t *testing.T) {
	names := map[string]bool{"core": true, "db": true, "data": true, "leaf": true}
	for text, want := range map[string][]string{
		"http://leaf,http://db:8080":     {"leaf", "db"},
		"db:5432":                        {"db"},
		"core":                           {"core"},
		"postgres://user@db/app":         {"db"},
		"core.shop.svc.cluster.local:80": {"core"},
		"leaf.shop":                      {"leaf"},
		"leaf.other.svc":                 nil, // another namespace
		"/data/core.json":                nil, // a path, not a host
		"the core of it":                 nil, // a word
		"grpc://LEAF.shop.svc:9090,http://nowhere:1": {"leaf"},
	} {
		if got := References(text, names, "shop"); !reflect.DeepEqual(got, want) {
			t.Errorf("References(%q) = %v, want %v", text, got, want)
		}
	}
}

func demo() []runtime.Object {
	labels := func(app string) map[string]string { return map[string]string{"app": app} }
	svc := func(name string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"},
			Spec: corev1.ServiceSpec{Selector: labels(name), Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
	}
	dep := func(name string, c corev1.Container, vols ...corev1.Volume) *appsv1.Deployment {
		return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"}, Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels(name)},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels(name)}, Spec: corev1.PodSpec{Containers: []corev1.Container{c}, Volumes: vols}}}}
	}
	return []runtime.Object{
		svc("frontend"), svc("core"), svc("leaf"), svc("db"),
		dep("frontend", corev1.Container{Name: "web", Env: []corev1.EnvVar{{Name: "CORE_URL", Value: "http://core"}}}),
		dep("core", corev1.Container{Name: "core", Args: []string{"--db=db:5432"},
			Env:     []corev1.EnvVar{{Name: "LEAF", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "core-config"}, Key: "leaf"}}}},
			EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "core-env"}}}}}),
		dep("leaf", corev1.Container{Name: "leaf"}, corev1.Volume{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "leaf-files"}}}}),
		dep("db", corev1.Container{Name: "db", Env: []corev1.EnvVar{{Name: "DATA", Value: "/data/db"}}}),
		dep("cron", corev1.Container{Name: "job", Command: []string{"curl", "http://frontend.shop.svc.cluster.local/"}}),
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "core-config", Namespace: "shop"}, Data: map[string]string{"leaf": "grpc://leaf:9090"}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "core-env", Namespace: "shop"}, Data: map[string]string{"FRONT": "http://frontend/"}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "leaf-files", Namespace: "shop"}, Data: map[string]string{"app.yaml": "store: db:5432\n"}},
	}
}

func build(t *testing.T, objs ...runtime.Object) *Graph {
	t.Helper()
	kube := fake.NewClientset(objs...)
	g, err := Build(context.Background(), kube, "shop")
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// Every call the configuration names, and where: env values, args, a
// ConfigMap key reference, envFrom, a ConfigMap volume, and a workload no
// Service selects; a path that looks like a name is no call.
func TestBuildFindsTheCallsAndWhere(t *testing.T) {
	g := build(t, demo()...)
	got := map[string]string{}
	for _, c := range g.Calls {
		got[c.From+"->"+c.To] = strings.Join(c.Where, "; ")
	}
	want := map[string]string{
		"frontend->core":            "deployment/frontend container web env CORE_URL",
		"core->db":                  "deployment/core container core args",
		"core->leaf":                "deployment/core container core env LEAF (configmap core-config key leaf)",
		"core->frontend":            "deployment/core container core envFrom configmap core-env key FRONT",
		"leaf->db":                  "deployment/leaf volume cfg configmap leaf-files key app.yaml",
		"deployment/cron->frontend": "deployment/cron container job command",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("calls:\n got %v\nwant %v", got, want)
	}
	if len(g.Services) != 4 || g.Services[0].Name != "core" || !reflect.DeepEqual(g.Services[0].Workloads, []string{"deployment/core"}) {
		t.Errorf("services: %+v", g.Services)
	}
	if !reflect.DeepEqual(g.Workloads, []string{"deployment/cron"}) {
		t.Errorf("workloads without a Service: %v", g.Workloads)
	}
}

// An intercepted Service keeps its workloads (through its decoy's
// selector), the interceptor and decoy are not nodes, and sessions'
// alterations land on the right Service, workload and namespace.
func TestInterceptedServiceAndMarks(t *testing.T) {
	objs := demo()
	core := objs[1].(*corev1.Service)
	core.Spec.Selector = map[string]string{"cz.dev/interceptor": "core"}
	objs = append(objs,
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "cz-decoy-core", Namespace: "shop", Labels: map[string]string{session.LabelManagedBy: session.ManagedBy, "cz.dev/interceptor": "core"}},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "core"}}},
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "cz-interceptor-core", Namespace: "shop", Labels: map[string]string{session.LabelManagedBy: session.ManagedBy}},
			Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"cz.dev/interceptor": "core"}}}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "core-abc", Namespace: "shop", Labels: map[string]string{"app": "core"}}},
	)
	g := build(t, objs...)
	if len(g.Services) != 4 || g.Services[0].Name != "core" || !reflect.DeepEqual(g.Services[0].Workloads, []string{"deployment/core"}) {
		t.Fatalf("the intercepted Service lost its workload, or our objects became nodes: %+v %v", g.Services, g.Workloads)
	}
	g.Decorate(context.Background(), []Altered{{Session: "s1", Owner: "alice@laptop", Alterations: []session.Alteration{
		{Text: "patched", Namespaces: []string{"shop"}, Service: "core", Role: "intercepted"},
		{Text: "file server", Namespaces: []string{"shop"}, Workload: "pod/core-abc", Role: "mounted"},
		{Text: "teleport", Namespaces: []string{"shop"}, Role: "teleported"},
		{Text: "elsewhere", Namespaces: []string{"other"}, Service: "core", Role: "intercepted"},
		{Text: "address", Namespaces: nil},
	}}})
	var roles []string
	for _, m := range g.Services[0].Marks {
		roles = append(roles, m.Role)
	}
	if !reflect.DeepEqual(roles, []string{"intercepted", "mounted"}) || len(g.Teleported) != 1 {
		t.Errorf("marks on core: %v; teleported: %v", roles, g.Teleported)
	}
	var dot, mermaid, text bytes.Buffer
	if err := g.DOT(&dot); err != nil || !strings.Contains(dot.String(), `"svc/core" [label="core\ndeployment/core\nintercepted (s1)\nmounted (s1)", fillcolor="#ffd8a8"]`) {
		t.Errorf("dot: %v\n%s", err, dot.String())
	}
	if err := g.Mermaid(&mermaid); err != nil || !strings.Contains(mermaid.String(), "class n_svc_core intercepted") {
		t.Errorf("mermaid: %v\n%s", err, mermaid.String())
	}
	if err := g.Text(&text); err != nil || !strings.Contains(text.String(), "core: intercepted: patched (session s1, alice@laptop)") {
		t.Errorf("text: %v\n%s", err, text.String())
	}
	// Graphviz reads what we write, when it is here (make test installs it).
	if _, err := exec.LookPath("dot"); err == nil {
		cmd := exec.Command("dot", "-Tsvg")
		cmd.Stdin = &dot
		if out, err := cmd.CombinedOutput(); err != nil || !bytes.Contains(out, []byte("<svg")) {
			t.Errorf("graphviz: %v %s", err, out)
		}
	}
}
