// Command cluster brings up, inspects and tears down the single-node
// Kubernetes cluster that kubectl-cz's end-to-end tests and benchmarks run on:
// real kube-apiserver, controller-manager, scheduler, kubelet and kube-proxy
// (built from k8s.io/kubernetes by hack/kube), Debian's etcd, containerd, runc
// and CNI plugins, CoreDNS, and images built from this repository.
//
//	go run ./hack/cluster up|down|purge|status|env|laptop [-- CMD ...]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

func main() {
	root := flag.String("state", ".cz/cluster", "folder for the cluster's state (certificates, data, logs)")
	bin := flag.String("bin", ".cz/bin", "folder with the built binaries (kube, coredns)")
	images := flag.String("images", ".cz/images", "folder of image archives to import into containerd")
	plugin := flag.String("plugin-bin", "bin", "folder of the kubectl-cz binary")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, `usage: cluster [flags] COMMAND
  up       start the cluster (idempotent: starts only what is not running)
  down     stop every process it started and remove its network leftovers; keep state
  purge    down, then delete the state folder
  status   show components, node and pods
  env      print the shell exports for KUBECONFIG and PATH
  laptop   run a command (default: a shell) in the laptop network namespace
  demo     deploy the sample-project graph and print one request's path
flags:
`)
		flag.PrintDefaults()
	}
	flag.Parse()
	abs := func(p string) string {
		a, err := filepath.Abs(p)
		if err != nil {
			fatal(err)
		}
		return a
	}
	l := layout{root: abs(*root), bin: abs(*bin), plugin: abs(*plugin)}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var err error
	switch cmd := flag.Arg(0); cmd {
	case "up":
		err = l.up(ctx, abs(*images))
	case "down":
		err = l.down()
	case "purge":
		if err = l.down(); err == nil {
			err = os.RemoveAll(l.root)
		}
	case "status":
		err = l.status(ctx)
	case "env":
		fmt.Printf("export KUBECONFIG=%s\nexport PATH=%s:$PATH\n", l.adminKubeconfig(), l.searchPath())
	case "laptop":
		err = l.laptop(flag.Args()[1:])
	case "demo":
		err = l.demo(ctx, flag.Args()[1:])
	default:
		flag.Usage()
		os.Exit(2)
	}
	if err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintf(os.Stderr, "cluster: %v\n", err)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		os.Exit(ee.ExitCode())
	}
	os.Exit(1)
}

// step prints what is happening and how long it took, so a slow start says where.
func step(start time.Time, format string, args ...any) {
	fmt.Printf("[%5.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
}

// laptop runs a command in the laptop network namespace with the cluster's
// kubeconfig and binaries on PATH.
func (l layout) laptop(args []string) error {
	if !netnsExists(laptopNetns) {
		return fmt.Errorf("no laptop namespace %q: run `make cluster-up` first", laptopNetns)
	}
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		args = []string{"bash", "-i"}
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", laptopNetns}, args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), "KUBECONFIG="+l.adminKubeconfig(), "PATH="+l.searchPath()+":"+os.Getenv("PATH"), "PS1=(cz-laptop) \\w# ")
	return cmd.Run()
}
