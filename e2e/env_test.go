//go:build e2e

// Package e2e holds the end-to-end tests: they run against the local cluster
// that `make cluster-up` starts (real kube-apiserver, kubelet, containerd,
// kube-proxy), with the laptop side in its own network namespace that can reach
// only the API server. `make test-e2e` brings everything up and runs them.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

const (
	laptopNetns   = "cz-laptop"
	demoNamespace = "sample-project"
	kubeVersion   = "v1.37.2"
)

// repoRoot is the folder of go.mod above this package.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for !exists(filepath.Join(dir, "go.mod")) {
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test folder")
		}
		dir = parent
	}
	return dir
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func kubeconfig(t testing.TB) string {
	t.Helper()
	// The API server's address exists only while the cluster is up; without
	// it, requests would leave through this machine's default route.
	if out, _ := exec.Command("ip", "-4", "addr", "show", "dev", "cz-node0").Output(); !strings.Contains(string(out), "10.220.0.1/") {
		t.Fatal("the local cluster is not up: run `make cluster-up` (or `make test-e2e`)")
	}
	p := filepath.Join(repoRoot(t), ".cz", "cluster", "kubeconfig", "admin.conf")
	if !exists(p) {
		t.Fatalf("no local cluster kubeconfig at %s: run `make cluster-up` (or `make test-e2e`)", p)
	}
	return p
}

func clientset(t testing.TB) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig(t))
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// laptopEnv is the environment of a command on the "laptop": the cluster's
// kubectl and our plugin on PATH, the admin kubeconfig.
func laptopEnv(t testing.TB) []string {
	root := repoRoot(t)
	// krew/ holds kubectl_complete-cz, which kubectl runs for completion.
	path := filepath.Join(root, "bin") + ":" + filepath.Join(root, "krew") + ":" + filepath.Join(root, ".cz", "bin") + ":" + os.Getenv("PATH")
	if !exists(filepath.Join(root, "bin", "kubectl-cz")) {
		t.Fatal("bin/kubectl-cz is not built: run `make build`")
	}
	return append(os.Environ(), "PATH="+path, "KUBECONFIG="+kubeconfig(t))
}

type result struct {
	stdout, stderr string
	err            error
}

// onLaptop runs a command inside the laptop network namespace.
func onLaptop(t testing.TB, timeout time.Duration, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", laptopNetns, name}, args...)...)
	cmd.Env = laptopEnv(t)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	return result{stdout: out.String(), stderr: strings.TrimSpace(errOut.String()), err: err}
}

func execContext(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	return string(out), err
}

// proc is a plugin process running in the laptop namespace.
type proc struct {
	t     testing.TB
	cmd   *exec.Cmd
	lines chan string
	out   *bytes.Buffer
	mu    sync.Mutex
	done  chan error
}

// startOnLaptop starts a command in the laptop namespace with extra
// environment, collecting its output lines.
func startOnLaptop(t testing.TB, env []string, name string, args ...string) *proc {
	t.Helper()
	return startCmd(t, env, append([]string{"ip", "netns", "exec", laptopNetns, name}, args...))
}

// startCmd starts argv with the laptop's environment plus env, collecting
// its output lines.
func startCmd(t testing.TB, env []string, argv []string) *proc {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(laptopEnv(t), env...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	p := &proc{t: t, cmd: cmd, lines: make(chan string, 100), out: &bytes.Buffer{}, done: make(chan error, 1)}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			p.mu.Lock()
			p.out.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
	}()
	go func() { err := cmd.Wait(); pw.Close(); <-scanned; p.done <- err }()
	// A test that fails midway still lets the process undo its changes.
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-p.done:
			p.done <- err
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
		}
	})
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// waitFor waits for an output line containing s and returns it.
func (p *proc) waitFor(s string, timeout time.Duration) string {
	p.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case line := <-p.lines:
			if strings.Contains(line, s) {
				return line
			}
		case err := <-p.done:
			p.done <- err
			p.t.Fatalf("process exited (%v) before printing %q:\n%s", err, s, p.output())
		case <-deadline:
			p.t.Fatalf("no %q after %s:\n%s", s, timeout, p.output())
		}
	}
}

// wait waits for the process to end.
func (p *proc) wait(timeout time.Duration) error {
	p.t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(timeout):
		p.t.Fatalf("still running after %s:\n%s", timeout, p.output())
		return nil
	}
}

func (p *proc) signal(sig os.Signal) {
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}
