//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubectl-cz/kubectl-cz/agent/wire"
	"github.com/kubectl-cz/kubectl-cz/agentsecret"
	"github.com/kubectl-cz/kubectl-cz/intercept"
	"github.com/kubectl-cz/kubectl-cz/pfconn"
)

// The agents answer only the developer who started them: the interceptor's
// control port and the mount's file server are on the pod's loopback, out
// of reach of the pod network (this machine is the node, so it reaches pod
// IPs as any pod does) and of other pods; through port-forward, a
// connection without the session's secret, or with another, is refused.
func TestAgentsAnswerOnlyTheirDeveloper(t *testing.T) {
	ctx := context.Background()
	cs := clientset(t)
	guardService(t, cs, "core")
	target := filesTarget(t, cs)
	env := machine(t)

	// The intercept first: `ip netns exec` gives it a mount namespace of
	// its own, which would hold a copy of a FUSE mount made before.
	icpt := startIntercept(t, env, "--local-port", "18090", "--agent-pull-policy", "Never")
	defer stopIntercept(t, icpt)
	dir := t.TempDir()
	m := startInLaptopNet(t, env, "kubectl-cz", "-n", demoNamespace, "mount", "pod", target, dir, "--agent-pull-policy", "Never")
	m.waitFor("mounted after", 90*time.Second)
	defer func() {
		m.signal(syscall.SIGTERM)
		if err := m.wait(30 * time.Second); err != nil {
			t.Errorf("mount exit: %v\n%s", err, m.output())
		}
	}()

	agentPod := interceptorPod(t, cs)
	targetPod, err := cs.CoreV1().Pods(demoNamespace).Get(ctx, target, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	filesContainer, filesPort := fileServer(t, targetPod)
	control := net.JoinHostPort(agentPod.Status.PodIP, strconv.Itoa(wire.ControlPort))
	files := net.JoinHostPort(targetPod.Status.PodIP, strconv.Itoa(filesPort))
	servicePort := net.JoinHostPort(agentPod.Status.PodIP, strconv.Itoa(wire.FirstListenPort))

	// From the pod network: the Service port answers (so the network is
	// there), the control port and the file server do not.
	if c, err := net.DialTimeout("tcp", servicePort, 3*time.Second); err != nil {
		t.Fatalf("the interceptor's Service port %s is unreachable from the node: the test proves nothing (%v)", servicePort, err)
	} else {
		c.Close()
	}
	for _, addr := range []string{control, files} {
		if c, err := net.DialTimeout("tcp", addr, 3*time.Second); err == nil {
			c.Close()
			t.Errorf("%s accepts connections from the pod network", addr)
		}
	}
	// From another pod (the mounted pod dials the interceptor's pod).
	dial := func(addr string) string {
		host, port, _ := net.SplitHostPort(addr)
		return inPod(t, target, "sh", "-c", fmt.Sprintf("nc -w 3 %s %s </dev/null >/dev/null 2>&1; echo $?", host, port))
	}
	if got := strings.TrimSpace(dial(servicePort)); got != "0" {
		t.Fatalf("a pod cannot reach the interceptor's Service port (nc exit %s): the test proves nothing", got)
	}
	if got := strings.TrimSpace(dial(control)); got == "0" {
		t.Error("another pod connected to the interceptor's control port")
	}
	// From a pod of its own (the mounted pod is the file server's: its
	// loopback is the file server's too), the file server is out of reach.
	runToolbox(t, cs, "intruder", "exec sleep 3600", nil, nil)
	intruder := func(addr string) string {
		host, port, _ := net.SplitHostPort(addr)
		return strings.TrimSpace(inPod(t, "intruder", "sh", "-c", fmt.Sprintf("nc -w 3 %s %s </dev/null >/dev/null 2>&1; echo $?", host, port)))
	}
	if got := intruder(servicePort); got != "0" {
		t.Fatalf("the intruder pod cannot reach the interceptor's Service port (nc exit %s): the test proves nothing", got)
	}
	if got := intruder(files); got == "0" {
		t.Error("another pod connected to the mount's file server")
	}
	// The interceptor's liveness probe runs in its container against the
	// loopback; the pod's own address has nothing listening for it.
	for _, c := range agentPod.Spec.Containers {
		for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
			if p != nil && (p.Exec == nil || p.TCPSocket != nil || p.HTTPGet != nil || p.GRPC != nil) {
				t.Errorf("container %s has a probe that dials the pod's address: %+v", c.Name, p.ProbeHandler)
			}
		}
		if c.LivenessProbe == nil {
			t.Errorf("container %s has no liveness probe", c.Name)
		}
	}
	probe := func(addr string) error {
		r := onLaptop(t, 30*time.Second, "kubectl", "-n", demoNamespace, "exec", agentPod.Name, "--", "/cz-agent", "probe", addr)
		return r.err
	}
	if err := probe(net.JoinHostPort("127.0.0.1", strconv.Itoa(wire.ControlPort))); err != nil {
		t.Errorf("the liveness probe fails on a healthy interceptor: %v", err)
	}
	if err := probe(control); err == nil {
		t.Error("the probe reached the control port on the pod's address")
	}
	// Inside the mounted pod itself, the file server is on its loopback:
	// a connection there without the secret gets the refusal and nothing else.
	refusal := inPod(t, target, "sh", "-c", fmt.Sprintf("printf 'CZ1 %s\\n' | nc -w 3 127.0.0.1 %d", strings.Repeat("0", 64), filesPort))
	if refusal != "\x01" {
		t.Errorf("the file server answered a wrong secret from inside its pod with %q, want the refusal byte alone", refusal)
	}

	// Through port-forward, as a developer with port-forward rights would.
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig(t))
	if err != nil {
		t.Fatal(err)
	}
	kube := kubernetes.NewForConfigOrDie(cfg)
	dialPF := func(pod string, port int) net.Conn {
		pf, err := pfconn.Dial(ctx, cfg, kube, demoNamespace, pod)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pf.Close() })
		c, err := pf.DialPort(ctx, port)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	short, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for name, c := range map[string]net.Conn{
		"control port": dialPF(agentPod.Name, wire.ControlPort),
		"file server":  dialPF(target, filesPort),
	} {
		if err := wire.Present(short, c, wire.NewSecret()); !errors.Is(err, wire.ErrRefused) {
			t.Errorf("%s through port-forward with another secret: %v, want a refusal", name, err)
		}
	}
	// No secret at all: straight to the intercept protocol.
	bare := dialPF(agentPod.Name, wire.ControlPort)
	done := make(chan error, 1)
	go func() {
		_, err := intercept.Register(bare, wire.Hello{Developer: "mallory", Port: "http", All: true}, "127.0.0.1:1")
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Error("a connection without the secret registered an --all rule")
		}
	case <-time.After(30 * time.Second):
		t.Error("a connection without the secret was neither refused nor closed within 30 s")
	}
	// The file server without a secret: an SFTP client's first packet gets
	// the refusal byte or nothing, never an SFTP answer.
	sftpInit := []byte{0, 0, 0, 5, 1, 0, 0, 0, 3} // SSH_FXP_INIT, version 3
	c := dialPF(target, filesPort)
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := c.Write(sftpInit); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Error("the file server kept a connection without a secret open for 15 s")
	}
	if len(got) > 0 && string(got) != "\x01" {
		t.Errorf("the file server answered an SFTP client without the secret with %q", got)
	}
	// The right secret, read through the API, passes (the refusals above are
	// the secret's doing, not a broken path).
	for name, probe := range map[string]struct {
		pod, secret string
		port        int
	}{
		"control port": {agentPod.Name, "cz-interceptor-core", wire.ControlPort},
		"file server":  {target, filesContainer, filesPort},
	} {
		secret, err := agentsecret.Read(ctx, cs, demoNamespace, probe.secret)
		if err != nil {
			t.Fatal(err)
		}
		if err := wire.Present(short, dialPF(probe.pod, probe.port), secret); err != nil {
			t.Errorf("%s with its own secret: %v", name, err)
		}
	}
}

func interceptorPod(t *testing.T, cs kubernetes.Interface) corev1.Pod {
	t.Helper()
	pods, err := cs.CoreV1().Pods(demoNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: intercept.LabelInterceptor + "=core"})
	if err != nil || len(pods.Items) != 1 || pods.Items[0].Status.PodIP == "" {
		t.Fatalf("interceptor pods: %v %v", err, pods)
	}
	return pods.Items[0]
}

// fileServer is the running kubectl cz file server of a pod, and its port.
func fileServer(t *testing.T, pod *corev1.Pod) (string, int) {
	t.Helper()
	for _, ec := range pod.Spec.EphemeralContainers {
		for i, a := range ec.Args {
			if a == "--listen" && i+1 < len(ec.Args) {
				host, port, _ := net.SplitHostPort(ec.Args[i+1])
				if host != "127.0.0.1" {
					t.Errorf("file server %s listens on %q, want the loopback", ec.Name, ec.Args[i+1])
				}
				n, _ := strconv.Atoi(port)
				return ec.Name, n
			}
		}
	}
	t.Fatalf("no file server in pod %s", pod.Name)
	return "", 0
}
