package teleport

import (
	"bufio"
	"context"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
)

// DefaultDomain is the cluster DNS domain when the cluster does not say.
const DefaultDomain = "cluster.local"

// ClusterDomain reads the cluster's DNS domain from the cluster DNS
// configuration where the user may read it (kube-system's coredns
// Corefile, the kubernetes plugin's first zone), else DefaultDomain.
func ClusterDomain(ctx context.Context, kube kubernetes.Interface) string {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	for _, name := range []string{"coredns", "rke2-coredns-rke2-coredns"} {
		cm, err := kube.CoreV1().ConfigMaps("kube-system").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			continue
		}
		if d := corefileDomain(cm.Data["Corefile"]); d != "" {
			return d
		}
	}
	return DefaultDomain
}

// corefileDomain is the first zone of the kubernetes plugin in a Corefile
// ("kubernetes cluster.local in-addr.arpa ip6.arpa {"), or "".
func corefileDomain(corefile string) string {
	sc := bufio.NewScanner(strings.NewReader(corefile))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "kubernetes" && f[1] != "{" {
			// It goes into the laptop's resolver file and hosts names:
			// a DNS name only.
			d := strings.TrimSuffix(f[1], ".")
			if len(validation.IsDNS1123Subdomain(d)) > 0 {
				return ""
			}
			return d
		}
	}
	return ""
}
