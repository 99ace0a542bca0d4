package containerenv

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "a", "EMPTY": ""}
	mapping := func(n string) (string, bool) { v, ok := vars[n]; return v, ok }
	for in, want := range map[string]string{
		"plain":           "plain",
		"$(A)":            "a",
		"x$(A)y$(A)":      "xaya",
		"$(EMPTY)!":       "!",
		"$(B)":            "$(B)",
		"$$(A)":           "$(A)",
		"$$$(A)":          "$a",
		"$A":              "$A",
		"100$":            "100$",
		"$(A":             "$(A",
		"$(A)$(":          "a$(",
		"$()":             "$()",
		"a $ b $$ c $(A)": "a $ b $ c a",
	} {
		if got := expand(in, mapping); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

// A value written with -o sh comes back byte for byte from a shell.
func TestShRoundTrip(t *testing.T) {
	values := []string{"", "plain", "it's", `"double"`, "$HOME `id` \\", "two\nlines\n", "tab\there", "ünïcode ✓", "'''"}
	var vars []Var
	for i, v := range values {
		vars = append(vars, Var{Name: "V" + string(rune('A'+i)), Value: v})
	}
	var b bytes.Buffer
	if _, err := Write(&b, vars, "sh"); err != nil {
		t.Fatal(err)
	}
	for _, v := range vars {
		out, err := exec.Command("sh", "-c", b.String()+`eval "x=\$$0"; printf %s "$x"`, v.Name).Output()
		if err != nil || string(out) != v.Value {
			t.Errorf("%q came back as %q (%v)", v.Value, out, err)
		}
	}
}

func TestFormats(t *testing.T) {
	vars := []Var{{Name: "A", Value: "plain-1.2:3"}, {Name: "B", Value: "has space"}, {Name: "C", Value: "it's\nx $y"}, {Name: "a.b", Value: "d"}}
	var b bytes.Buffer
	skipped, err := Write(&b, vars, "env")
	if err != nil || len(skipped) != 1 || skipped[0] != "a.b" {
		t.Fatal(err, skipped)
	}
	want := "A=plain-1.2:3\nB='has space'\nC=\"it's\\nx \\$y\"\n"
	if b.String() != want {
		t.Errorf("env:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	if skipped, _ := Write(&b, vars, "sh"); len(skipped) != 1 || skipped[0] != "a.b" {
		t.Errorf("sh skipped %v", skipped)
	}
	b.Reset()
	if _, err := Write(&b, vars, "docker"); err == nil || !strings.Contains(err.Error(), "C") || b.Len() != 0 {
		t.Errorf("docker with a line break: %v, wrote %q", err, b.String())
	}
	b.Reset()
	if _, err := Write(&b, vars[:2], "docker"); err != nil || b.String() != "A=plain-1.2:3\nB=has space\n" {
		t.Errorf("docker: %v %q", err, b.String())
	}
	if _, err := Write(&b, vars, "xml"); err == nil {
		t.Error("an unknown format was accepted")
	}
}

func TestResolveWithoutPodAndLinks(t *testing.T) {
	no := false
	kube := fake.NewClientset(
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: "default"},
			Spec: corev1.ServiceSpec{ClusterIP: "10.0.0.1", Ports: []corev1.ServicePort{{Name: "https", Port: 443}}}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "my-db", Namespace: "ns"},
			Spec: corev1.ServiceSpec{ClusterIP: "10.0.0.9", Ports: []corev1.ServicePort{{Port: 5432, Protocol: corev1.ProtocolTCP}}}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg", Namespace: "ns"}, Data: map[string]string{"K": "v"}},
	)
	spec := &corev1.PodSpec{Containers: []corev1.Container{{
		Name: "app",
		Env: []corev1.EnvVar{
			{Name: "DB", Value: "$(MY_DB_SERVICE_HOST):$(MY_DB_SERVICE_PORT)"},
			{Name: "POD", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "NS", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
			{Name: "MY_DB_SERVICE_HOST", Value: "overridden"},
		},
	}}}
	res, err := Resolve(context.Background(), kube, Source{Namespace: "ns", Spec: spec, Container: "app"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, v := range res.Vars {
		got[v.Name] = v.Value
	}
	for k, want := range map[string]string{"DB": "10.0.0.9:5432", "POD": "", "NS": "ns", "MY_DB_SERVICE_HOST": "overridden",
		"MY_DB_PORT_5432_TCP": "tcp://10.0.0.9:5432", "KUBERNETES_SERVICE_PORT_HTTPS": "443"} {
		if got[k] != want {
			t.Errorf("%s = %q, want %q", k, got[k], want)
		}
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "metadata.name") {
		t.Errorf("warnings: %v", res.Warnings)
	}

	// enableServiceLinks: false keeps only the API server's links.
	spec.EnableServiceLinks = &no
	res, err = Resolve(context.Background(), kube, Source{Namespace: "ns", Spec: spec, Container: "app"})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range res.Vars {
		if strings.HasPrefix(v.Name, "MY_DB_PORT") {
			t.Errorf("service links with enableServiceLinks false: %s", v.Name)
		}
	}

	// A reference to a ConfigMap that is not there, and not optional.
	spec.Containers[0].Env = append(spec.Containers[0].Env, corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{
		ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "gone"}, Key: "k"}}})
	if _, err := Resolve(context.Background(), kube, Source{Namespace: "ns", Spec: spec, Container: "app"}); err == nil ||
		!strings.Contains(err.Error(), `configmap "gone" not found in namespace "ns"`) || !strings.Contains(err.Error(), "env X") {
		t.Errorf("missing ConfigMap: %v", err)
	}
	if _, err := Resolve(context.Background(), kube, Source{Namespace: "ns", Spec: spec, Container: "nope"}); err == nil || !strings.Contains(err.Error(), "containers: app") {
		t.Errorf("unknown container: %v", err)
	}
}
