package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"

	_ "embed"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

//go:embed addons/coredns.yaml
var corednsManifest string

// up starts whatever part of the cluster is not running. Every step checks
// before it acts, so it also resumes a half-started or crashed cluster.
func (l layout) up(ctx context.Context, imagesDir string) error {
	t0 := time.Now()
	if err := l.checkPrerequisites(); err != nil {
		return err
	}
	if err := ensurePKI(l.path("pki")); err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	if err := l.writeConfigs(); err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	if err := l.clearLeftovers(t0); err != nil {
		return err
	}
	if err := setupNodeNetwork(); err != nil {
		return fmt.Errorf("node network: %w", err)
	}
	if err := l.setSysctls(); err != nil {
		return err
	}
	if err := setupLaptop(); err != nil {
		return fmt.Errorf("laptop namespace: %w", err)
	}
	step(t0, "network ready: node %s on %s, laptop namespace %s (%s)", nodeIP, nodeBridge, laptopNetns, laptopIP)

	comps := l.components()
	byName := map[string]component{}
	for _, c := range comps {
		byName[c.name] = c
	}
	if err := l.start(byName["etcd"]); err != nil {
		return err
	}
	if err := waitFor(ctx, 30*time.Second, "etcd", func() bool {
		resp, err := http.Get("http://" + etcdClient + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, l.logHint("etcd")); err != nil {
		return err
	}
	step(t0, "etcd ready")
	if err := l.start(byName["containerd"]); err != nil {
		return err
	}
	if err := waitFor(ctx, 30*time.Second, "containerd", func() bool {
		return run("ctr", "--address", containerdSock, "version") == nil
	}, l.logHint("containerd")); err != nil {
		return err
	}
	step(t0, "containerd ready")
	n, err := l.importImages(imagesDir)
	if err != nil {
		return err
	}
	step(t0, "%d image archives imported", n)

	if err := l.start(byName["kube-apiserver"]); err != nil {
		return err
	}
	cs, err := l.client()
	if err != nil {
		return err
	}
	if err := waitFor(ctx, 60*time.Second, "kube-apiserver", func() bool {
		body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && strings.TrimSpace(string(body)) == "ok"
	}, l.logHint("kube-apiserver")); err != nil {
		return err
	}
	step(t0, "kube-apiserver ready at https://%s:%s", nodeIP, apiPort)
	for _, name := range []string{"kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"} {
		if err := l.start(byName[name]); err != nil {
			return err
		}
	}
	if err := l.kubectl("apply", "-f", "-").withStdin(corednsManifest).run(); err != nil {
		return fmt.Errorf("apply CoreDNS: %w", err)
	}
	since := l.kubeletStart()
	if err := waitFor(ctx, 90*time.Second, "node "+nodeName+" Ready", func() bool {
		node, err := cs.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		return err == nil && nodeReadySince(node, since)
	}, l.logHint("kubelet")); err != nil {
		return err
	}
	step(t0, "node %s Ready", nodeName)
	if err := waitPods(ctx, cs, "kube-system", "k8s-app=kube-dns", since, 120*time.Second); err != nil {
		return err
	}
	if err := waitFor(ctx, 30*time.Second, "cluster DNS at "+dnsServiceIP, func() bool { return dnsAnswers(ctx) },
		"kubectl -n kube-system logs deploy/coredns"); err != nil {
		return err
	}
	step(t0, "CoreDNS answers at %s (cluster.local)", dnsServiceIP)
	// A component that could not start (a port in use, say) is gone by now,
	// even if something else answered in its place.
	for _, c := range comps {
		if _, ok := l.running(c); !ok {
			return fmt.Errorf("%s exited (%s)", c.name, l.logHint(c.name))
		}
	}
	fmt.Printf("\nCluster up. Use it with:\n  export KUBECONFIG=%s\n  export PATH=%s:$PATH\n", l.adminKubeconfig(), l.searchPath())
	return nil
}

func (l layout) checkPrerequisites() error {
	var missing []string
	for _, bin := range []string{"etcd", "containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "conntrack", "ip"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	for _, p := range []string{"/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/loopback", l.kube()} {
		if !exists(p) {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s: run `make deps kube` first", strings.Join(missing, ", "))
	}
	return nil
}

// errNotUp guards every call to the API server: its address exists only on
// the bridge the cluster creates; with the cluster down, a request would
// follow this machine's default route out to its own network.
func errNotUp() error {
	if out, _ := output("ip", "-4", "addr", "show", "dev", nodeBridge); !strings.Contains(out, nodeIP+"/") {
		return fmt.Errorf("the local cluster is not up (no %s on %s): run `make cluster-up`", nodeIP, nodeBridge)
	}
	return nil
}

func (l layout) client() (*kubernetes.Clientset, error) {
	if err := errNotUp(); err != nil {
		return nil, err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", l.adminKubeconfig())
	if err != nil {
		return nil, err
	}
	cfg.Timeout = 5 * time.Second
	return kubernetes.NewForConfig(cfg)
}

func (l layout) logHint(name string) string {
	return fmt.Sprintf("see %s", l.path("logs", name+".log"))
}

// waitFor polls cond every 200 ms until it holds, the timeout passes or ctx ends.
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() bool, hint string) error {
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		return cond(), nil
	})
	if err != nil {
		return fmt.Errorf("%s not ready after %s (%s)", what, timeout, hint)
	}
	return nil
}

// waitDeployment waits until every replica of a Deployment is updated and
// available, printing progress when it changes.
func waitDeployment(ctx context.Context, cs kubernetes.Interface, ns, name string, timeout time.Duration) error {
	last := ""
	return waitFor(ctx, timeout, "deployment "+ns+"/"+name, func() bool {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		msg := fmt.Sprintf("  %s/%s: %d/%d ready", ns, name, d.Status.ReadyReplicas, want)
		if msg != last {
			fmt.Println(msg)
			last = msg
		}
		return deploymentDone(d, want)
	}, "kubectl -n "+ns+" describe deployment "+name)
}

func deploymentDone(d *appsv1.Deployment, want int32) bool {
	return d.Status.ObservedGeneration >= d.Generation && d.Status.UpdatedReplicas == want &&
		d.Status.AvailableReplicas == want && d.Status.Replicas == want
}

// kubectlCmd runs the cluster's own kubectl with the admin kubeconfig.
type kubectlCmd struct{ *exec.Cmd }

func (l layout) kubectl(args ...string) kubectlCmd {
	cmd := exec.Command(l.kube(), append([]string{"kubectl", "--kubeconfig", l.adminKubeconfig()}, args...)...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	return kubectlCmd{cmd}
}

func (k kubectlCmd) withStdin(s string) kubectlCmd {
	k.Stdin = strings.NewReader(s)
	return k
}

func (k kubectlCmd) run() error {
	if err := errNotUp(); err != nil {
		return err
	}
	return k.Run()
}
