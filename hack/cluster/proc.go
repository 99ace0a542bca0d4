package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// component is one long-running process of the cluster.
type component struct {
	name string
	argv []string
}

// components lists the processes in start order; cluster-down stops them in
// reverse.
func (l layout) components() []component {
	kube := l.kube()
	pki := l.pki
	kc := l.kubeconfig
	return []component{
		{"etcd", []string{"etcd", "--name=cz", "--data-dir=" + l.path("etcd"),
			"--listen-client-urls=http://" + etcdClient, "--advertise-client-urls=http://" + etcdClient,
			"--listen-peer-urls=http://" + etcdPeer, "--initial-advertise-peer-urls=http://" + etcdPeer,
			"--initial-cluster=cz=http://" + etcdPeer, "--listen-metrics-urls=", "--log-level=warn"}},
		{"containerd", []string{"containerd", "--config=" + l.path("etc", "containerd.toml")}},
		{"kube-apiserver", []string{kube, "kube-apiserver",
			"--etcd-servers=http://" + etcdClient,
			"--bind-address=" + nodeIP, "--advertise-address=" + nodeIP, "--secure-port=" + apiPort,
			"--service-cluster-ip-range=" + serviceCIDR,
			"--client-ca-file=" + pki("ca.crt"),
			"--tls-cert-file=" + pki("apiserver.crt"), "--tls-private-key-file=" + pki("apiserver.key"),
			"--kubelet-client-certificate=" + pki("apiserver-kubelet-client.crt"),
			"--kubelet-client-key=" + pki("apiserver-kubelet-client.key"),
			// Reach the kubelet by its address: a name lookup would go to this machine's resolver.
			"--kubelet-preferred-address-types=InternalIP",
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file=" + pki("sa.pub"), "--service-account-signing-key-file=" + pki("sa.key"),
			"--authorization-mode=Node,RBAC",
			"--enable-admission-plugins=NodeRestriction",
			"--allow-privileged=true",
			"--requestheader-client-ca-file=" + pki("front-proxy-ca.crt"),
			"--requestheader-allowed-names=front-proxy-client",
			"--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
			"--requestheader-extra-headers-prefix=X-Remote-Extra-",
			"--proxy-client-cert-file=" + pki("front-proxy-client.crt"), "--proxy-client-key-file=" + pki("front-proxy-client.key"),
			"--profiling=false", "--v=0"}},
		{"kube-controller-manager", []string{kube, "kube-controller-manager",
			"--kubeconfig=" + kc("controller-manager"),
			"--authentication-kubeconfig=" + kc("controller-manager"), "--authorization-kubeconfig=" + kc("controller-manager"),
			"--bind-address=127.0.0.1", "--leader-elect=false",
			"--service-cluster-ip-range=" + serviceCIDR, "--cluster-cidr=" + podCIDR,
			"--cluster-signing-cert-file=" + pki("ca.crt"), "--cluster-signing-key-file=" + pki("ca.key"),
			"--root-ca-file=" + pki("ca.crt"), "--service-account-private-key-file=" + pki("sa.key"),
			"--use-service-account-credentials=true", "--profiling=false", "--v=0"}},
		{"kube-scheduler", []string{kube, "kube-scheduler",
			"--kubeconfig=" + kc("scheduler"),
			"--authentication-kubeconfig=" + kc("scheduler"), "--authorization-kubeconfig=" + kc("scheduler"),
			"--bind-address=127.0.0.1", "--leader-elect=false", "--profiling=false", "--v=0"}},
		{"kubelet", []string{kube, "kubelet",
			"--config=" + l.path("etc", "kubelet.yaml"), "--kubeconfig=" + kc("kubelet"),
			"--root-dir=" + l.path("kubelet"), "--cert-dir=" + l.path("kubelet", "pki"),
			"--node-ip=" + nodeIP, "--hostname-override=" + nodeName, "--v=0"}},
		{"kube-proxy", []string{kube, "kube-proxy", "--config=" + l.path("etc", "kube-proxy.yaml"), "--v=0"}},
	}
}

func (l layout) pidFile(name string) string { return l.path("pids", name+".pid") }

// running returns the PID of a component started by this harness that is still
// alive. The PID file alone is not trusted: the process's command line must
// still be the one we started, so a reused PID is never signalled.
func (l layout) running(c component) (int, bool) {
	b, err := os.ReadFile(l.pidFile(c.name))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return 0, false
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	// Program and subcommand only: the flags may have changed since it started.
	if filepath.Base(args[0]) != filepath.Base(c.argv[0]) {
		return 0, false
	}
	if len(c.argv) > 1 && (len(args) < 2 || args[1] != c.argv[1]) {
		return 0, false
	}
	return pid, true
}

// start launches a component in its own session, detached from the harness,
// with its output in logs/<name>.log.
func (l layout) start(c component) error {
	if _, ok := l.running(c); ok {
		return nil
	}
	bin, err := exec.LookPath(c.argv[0])
	if err != nil {
		return fmt.Errorf("%s: %w", c.name, err)
	}
	logf, err := os.OpenFile(l.path("logs", c.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "\n==== %s started by hack/cluster at %s\n", c.name, time.Now().Format(time.RFC3339))
	cmd := exec.Command(bin, c.argv[1:]...)
	cmd.Args[0] = c.argv[0]
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = l.root
	cmd.Env = append(os.Environ(), "PATH="+os.Getenv("PATH")+":/usr/sbin:/sbin")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", c.name, err)
	}
	if err := os.WriteFile(l.pidFile(c.name), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		return err
	}
	// Reap it if it dies while we are still running, so `running` sees it gone.
	go func() { _ = cmd.Wait() }()
	return nil
}

// stop sends SIGTERM, waits, then SIGKILL. Only a process recorded in our PID
// file and still running our command line is signalled.
func (l layout) stop(c component, grace time.Duration) error {
	pid, ok := l.running(c)
	if !ok {
		_ = os.Remove(l.pidFile(c.name))
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	if !waitGone(pid, grace) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		waitGone(pid, 5*time.Second)
	}
	return os.Remove(l.pidFile(c.name))
}

func waitGone(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !alive(pid) {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return !alive(pid)
}

// alive is true for a process that exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
