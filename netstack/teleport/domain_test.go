package teleport

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestClusterDomain(t *testing.T) {
	corefile := ".:53 {\n    errors\n    kubernetes corp.internal in-addr.arpa ip6.arpa {\n       pods insecure\n    }\n    forward . /etc/resolv.conf\n}\n"
	kube := fake.NewClientset(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "coredns", Namespace: "kube-system"}, Data: map[string]string{"Corefile": corefile}})
	if d := ClusterDomain(context.Background(), kube); d != "corp.internal" {
		t.Errorf("domain from the Corefile: %q", d)
	}
	if d := ClusterDomain(context.Background(), fake.NewClientset()); d != DefaultDomain {
		t.Errorf("without a readable Corefile: %q", d)
	}
	if d := corefileDomain("kubernetes {\n}\n"); d != "" {
		t.Errorf("a kubernetes block without zones: %q", d)
	}
	// A zone that is no DNS name never reaches the resolver file.
	for _, zone := range []string{"evil;options", "a#b", "UPPER..local", "x/y"} {
		if d := corefileDomain("kubernetes " + zone + " {\n}\n"); d != "" {
			t.Errorf("zone %q taken as %q", zone, d)
		}
	}
}
