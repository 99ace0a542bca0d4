// Command bench measures, on the local cluster and in one run, the paths
// users compare kubectl-cz with: `kubectl port-forward` (throughput, keep-alive
// and new-connection latency, cold start), `kubectl cp` and `kubectl exec`,
// against the direct in-cluster path. It prints one table (min, median, p99,
// max over the samples) with each row's ratio to its baseline.
//
//	go run ./bench [-runs 5] [-pings 1000] [-out FILE]
//
// Later features add their rows beside these.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

const (
	benchNamespace = "cz-bench"
	benchPod       = "bench-target"
	blobSize       = 100 << 20
)

// selected sections (-only); empty runs them all.
var selected = map[string]bool{}

type bench struct {
	runs, pings int
	podIP       string
	cs          kubernetes.Interface
	table       *table
	tmp         string
}

func main() {
	runs := flag.Int("runs", 5, "samples of each whole-transfer and process-launch row")
	pings := flag.Int("pings", 1000, "samples of each latency row")
	out := flag.String("out", ".cz/bench/latest.md", "also write the table here (empty: do not)")
	only := flag.String("only", "", "comma-separated sections to run: portforward, kubectl, intercept, teleport, scale, mount, sessions (default: all)")
	flag.Parse()
	for _, s := range strings.Split(*only, ",") {
		if s = strings.TrimSpace(s); s != "" {
			selected[s] = true
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runAll(ctx, *runs, *pings, *out); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func runAll(ctx context.Context, runs, pings int, out string) error {
	if err := clusterUp(); err != nil {
		return err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))
	if err != nil {
		return fmt.Errorf("KUBECONFIG: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	// Copies land in memory where the machine has it (/dev/shm): the rows
	// compare how files leave the pod, not this disk's file creation,
	// which here varies 3x from minute to minute.
	tmpRoot := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		tmpRoot = "/dev/shm"
	}
	tmp, err := os.MkdirTemp(tmpRoot, "cz-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	b := &bench{runs: runs, pings: pings, cs: cs, table: &table{}, tmp: tmp}
	fmt.Fprintln(os.Stderr, "bench: deploying the target pod (100 MiB file, 2,000 small files)...")
	if b.podIP, err = deployTarget(ctx, cs); err != nil {
		return err
	}
	sections := []struct {
		name string
		run  func(context.Context) error
	}{
		{"portforward", b.portForward},
		{"kubectl", b.copyAndExec},
		{"intercept", b.intercept},
		{"teleport", b.teleport},
		{"mount", b.mount},
		{"sessions", func(ctx context.Context) error { return b.sessions(ctx, cfg) }},
		// Last: 1,000 Services keep kube-proxy and the controllers busy.
		{"scale", func(ctx context.Context) error { return b.scale(ctx, cfg) }},
	}
	for _, s := range sections {
		if len(selected) > 0 && !selected[s.name] {
			continue
		}
		if err := s.run(ctx); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	kv, _ := exec.Command("kubectl", "version", "--client").Output()
	header := fmt.Sprintf("Local cluster, %s, %s; %d samples per transfer row, %d per latency row.\n\n",
		strings.TrimSpace(strings.SplitN(string(kv), "\n", 2)[0]), time.Now().UTC().Format("2006-01-02 15:04 MST"), runs, pings)
	text := header + b.table.markdown()
	fmt.Print("\n" + text)
	if out != "" {
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return err
		}
		return os.WriteFile(out, []byte(text), 0o644)
	}
	return nil
}

// clusterUp refuses to run when the local cluster's node address is missing:
// requests to it would otherwise leave through this machine's default route.
func clusterUp() error {
	out, _ := exec.Command("ip", "-4", "addr", "show", "dev", "cz-node0").Output()
	if !strings.Contains(string(out), "10.220.0.1/") {
		return fmt.Errorf("the local cluster is not up: run `make cluster-up`")
	}
	if os.Getenv("KUBECONFIG") == "" {
		return fmt.Errorf("KUBECONFIG is not set: run through `make bench`")
	}
	return nil
}
