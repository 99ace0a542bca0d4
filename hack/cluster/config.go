package main

import (
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// The cluster's fixed plan. Every address is on an interface the harness
// creates (a bridge for the node, a veth to the laptop namespace), so nothing
// listens on or routes to this machine's own network.
const (
	nodeName     = "cz-node"
	nodeBridge   = "cz-node0"
	nodeIP       = "10.220.0.1"
	nodeCIDR     = "10.220.0.1/24"
	apiPort      = "6443"
	podCIDR      = "10.244.0.0/16"
	nodePodCIDR  = "10.244.0.0/24"
	cniBridge    = "cz-cni0"
	serviceCIDR  = "10.96.0.0/16"
	apiServiceIP = "10.96.0.1"
	dnsServiceIP = "10.96.0.10"
	etcdClient   = "127.0.0.1:23790"
	etcdPeer     = "127.0.0.1:23800"

	laptopNetns  = "cz-laptop"
	laptopHostIf = "cz-lap0"
	laptopHostIP = "10.221.0.1"
	laptopIP     = "10.221.0.2"

	// Unix sockets live under /run: their paths must stay short (108 bytes),
	// whatever the depth of the checkout.
	runDir          = "/run/kubectl-cz"
	containerdSock  = runDir + "/containerd.sock"
	clusterName     = "kubectl-cz-local"
	kubeVersion     = "v1.37.2"
	pauseImage      = "kubectl-cz.local/pause:3.10"
	corednsImage    = "kubectl-cz.local/coredns:v1.15.0"
	imagePullPolicy = "IfNotPresent"
)

// layout is where the harness keeps its state: one folder (ignored by git)
// that cluster-down can remove whole.
type layout struct {
	root string // .cz/cluster
	bin  string // .cz/bin: built binaries (kube, coredns, ...)
	// plugin is the folder of the kubectl-cz binary (the repository's bin/).
	plugin string
}

func (l layout) path(parts ...string) string {
	return filepath.Join(append([]string{l.root}, parts...)...)
}
func (l layout) pki(name string) string     { return l.path("pki", name) }
func (l layout) kubeconfig(n string) string { return l.path("kubeconfig", n+".conf") }
func (l layout) kube() string               { return filepath.Join(l.bin, "kube") }

// path is the PATH that puts the plugin and the cluster's kubectl first.
func (l layout) searchPath() string { return l.plugin + ":" + l.bin }

// AdminKubeconfig is the file tests and users point KUBECONFIG at.
func (l layout) adminKubeconfig() string { return l.kubeconfig("admin") }

func (l layout) writeConfigs() error {
	for _, d := range []string{"kubeconfig", "etc", "logs", "pids", "cni/net.d", "etcd", "containerd", "kubelet", "pod-logs"} {
		if err := os.MkdirAll(l.path(d), 0o755); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return err
	}
	users := map[string]string{
		"admin":              "admin",
		"controller-manager": "controller-manager",
		"scheduler":          "scheduler",
		"kubelet":            "kubelet-client",
		"kube-proxy":         "kube-proxy",
	}
	for name, cert := range users {
		if err := l.writeKubeconfig(name, cert); err != nil {
			return fmt.Errorf("kubeconfig %s: %w", name, err)
		}
	}
	files := map[string]string{
		l.path("etc", "containerd.toml"):                l.containerdConfig(),
		l.path("cni", "net.d", "10-cz-bridge.conflist"): l.cniConfig(),
		l.path("etc", "kubelet.yaml"):                   l.kubeletConfig(),
		l.path("etc", "kube-proxy.yaml"):                l.proxyConfig(),
		l.path("etc", "resolv.conf"):                    "# Pods with dnsPolicy Default get no upstream: the cluster reaches nothing outside this machine.\n",
	}
	for path, content := range files {
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (l layout) writeKubeconfig(name, cert string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[clusterName] = &clientcmdapi.Cluster{
		Server:               "https://" + nodeIP + ":" + apiPort,
		CertificateAuthority: l.pki("ca.crt"),
	}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{
		ClientCertificate: l.pki(cert + ".crt"),
		ClientKey:         l.pki(cert + ".key"),
	}
	cfg.Contexts[clusterName] = &clientcmdapi.Context{Cluster: clusterName, AuthInfo: name, Namespace: "default"}
	cfg.CurrentContext = clusterName
	// Embed the files so the admin kubeconfig can be copied into the laptop
	// namespace or another machine as one file.
	if err := clientcmdapi.FlattenConfig(cfg); err != nil {
		return err
	}
	return clientcmd.WriteToFile(*cfg, l.kubeconfig(name))
}

func (l layout) containerdConfig() string {
	return fmt.Sprintf(`# containerd for the kubectl-cz local cluster (written by hack/cluster).
version = 2
root = %q
state = %q

[grpc]
  address = %q

[ttrpc]
  address = %q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  # Required on these machines: without CAP_SYS_RESOURCE runc cannot lower
  # oom_score_adj and every sandbox fails.
  restrict_oom_score_adj = true
  # Pod network namespaces under our state, so cluster-down finds them all.
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
`, l.path("containerd", "root"), l.path("containerd", "state"), containerdSock, containerdSock+".ttrpc", pauseImage, l.path("cni", "net.d"))
}

func (l layout) cniConfig() string {
	// No ipMasq and no portmap: pods talk to each other and to the node only,
	// and nothing is left in the host's NAT table.
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "cz-pods",
  "plugins": [
    {
      "type": "bridge",
      "bridge": %q,
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": %q
      }
    }
  ]
}
`, cniBridge, nodePodCIDR, l.path("cni", "ipam"))
}

func (l layout) kubeletConfig() string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %q}
authorization: {mode: Webhook}
tlsCertFile: %q
tlsPrivateKeyFile: %q
containerRuntimeEndpoint: unix://%s
cgroupDriver: cgroupfs
# These machines run cgroup v1; 1.37 refuses it unless told otherwise.
failCgroupV1: false
failSwapOn: false
clusterDomain: cluster.local
clusterDNS: [%s]
resolvConf: %q
podLogsDir: %q
# Imported images cannot be pulled back: never garbage-collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%%", nodefs.inodesFree: "1%%", imagefs.available: "1%%"}
serializeImagePulls: false
maxPods: 110
`, nodeIP, l.pki("ca.crt"), l.pki("kubelet.crt"), l.pki("kubelet.key"), containerdSock, dnsServiceIP, l.path("etc", "resolv.conf"), l.path("pod-logs"))
}

func (l layout) proxyConfig() string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: %q}
hostnameOverride: %s
clusterCIDR: %s
bindAddress: %s
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["%s/32"]
# Leave the host's conntrack sysctls alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
`, l.kubeconfig("kube-proxy"), nodeName, podCIDR, nodeIP, nodeIP)
}
