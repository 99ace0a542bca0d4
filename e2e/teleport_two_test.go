//go:build e2e

package e2e

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
)

const secondNamespace = "cz-e2e-second"

// secondGraph is a namespace with one Service, "echo", answering as the
// demo's leaf does.
func secondGraph(t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	ctx := context.Background()
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: secondNamespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	labels := map[string]string{"app": "echo"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "echo"},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "echo", Image: "kubectl-cz.local/demo:dev", ImagePullPolicy: corev1.PullIfNotPresent,
					Env:            []corev1.EnvVar{{Name: "ROLE", Value: "leaf"}, {Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}},
					Ports:          []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}}, PeriodSeconds: 1},
				}}},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments(secondNamespace).Create(ctx, dep, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "echo"}, Spec: corev1.ServiceSpec{Selector: labels,
		Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}}}
	if _, err := cs.CoreV1().Services(secondNamespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	waitUntil(t, 90*time.Second, func() bool {
		d, err := cs.AppsV1().Deployments(secondNamespace).Get(ctx, "echo", metav1.GetOptions{})
		return err == nil && d.Status.ReadyReplicas == 1
	})
}

// Two teleports on one laptop at once, two namespaces, stopped in either
// order, with two shims or a shim and /etc/hosts: each one's names answer
// while it runs (short names too, through the other's shim), the other's
// keep answering when one stops, and the resolver file, the hosts file and
// the loopback addresses come back byte for byte.
func TestTwoTeleportsStoppedInEitherOrder(t *testing.T) {
	cs := clientset(t)
	secondGraph(t, cs)
	before := snapshotLaptop(t)
	for _, c := range []struct {
		name        string
		secondDNS   []string
		firstStops  bool
		shortViaTwo bool
	}{
		{"two shims, first stops first", nil, true, true},
		{"two shims, second stops first", nil, false, true},
		{"a shim and hosts, first stops first", []string{"--dns", "hosts"}, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			one := startOnLaptop(t, machine(t), "kubectl-cz", "-n", demoNamespace, "teleport", "namespace")
			one.waitFor("teleport active", 60*time.Second)
			two := startOnLaptop(t, machine(t), "kubectl-cz", append([]string{"-n", secondNamespace, "teleport", "namespace"}, c.secondDNS...)...)
			two.waitFor("teleport active", 60*time.Second)
			answers := func(url, want string) {
				t.Helper()
				if got, err := servedBy(t, url); err != nil || !strings.HasPrefix(got, want) {
					t.Errorf("%s: %q %v, want %q...\nfirst:\n%s\nsecond:\n%s", url, got, err, want, one.output(), two.output())
				}
			}
			answers("http://core.sample-project/", "core ")
			answers("http://echo."+secondNamespace+"/", "leaf ")
			answers("http://echo."+secondNamespace+".svc.cluster.local/", "leaf ")
			answers("http://core/", "core ") // the first's namespace is searched too
			if c.shortViaTwo {
				answers("http://echo/", "leaf ") // the second's first
			}
			first, second := one, two
			if !c.firstStops {
				first, second = two, one
			}
			first.signal(syscall.SIGTERM)
			if err := first.wait(30 * time.Second); err != nil {
				t.Fatalf("exit: %v\n%s", err, first.output())
			}
			if first == one {
				answers("http://echo."+secondNamespace+"/", "leaf ")
			} else {
				answers("http://core.sample-project/", "core ")
			}
			second.signal(syscall.SIGTERM)
			if err := second.wait(30 * time.Second); err != nil {
				t.Fatalf("exit: %v\n%s", err, second.output())
			}
			assertLaptopRestored(t, before)
		})
	}
	assertLaptopRestored(t, before)
}
