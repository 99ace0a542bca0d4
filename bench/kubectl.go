package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// copyAndExec measures kubectl cp and exec: the paths a mount competes with.
func (b *bench) copyAndExec(ctx context.Context) error {
	fmt.Fprintln(os.Stderr, "bench: kubectl cp and exec")
	pod := benchNamespace + "/" + benchPod
	cp := &row{name: "100 MiB file, kubectl cp", unit: "MiB/s"}
	cat := &row{name: "100 MiB file, kubectl exec cat", unit: "MiB/s", baseline: "100 MiB file, kubectl cp"}
	cpLog := &row{name: "100 MiB log file, kubectl cp", unit: "MiB/s"}
	for i := 0; i < b.runs; i++ {
		for _, f := range []struct {
			name string
			r    *row
		}{{"blob", cp}, {"log", cpLog}} {
			dst := filepath.Join(b.tmp, f.name)
			d, err := timed(ctx, nil, "kubectl", "cp", pod+":/data/"+f.name, dst)
			if err != nil {
				return err
			}
			if st, err := os.Stat(dst); err != nil || st.Size() != blobSize {
				return fmt.Errorf("kubectl cp of %s gave %v, %v; want %d bytes", f.name, st, err, blobSize)
			}
			f.r.samples = append(f.r.samples, mibps(blobSize, d))
			os.Remove(dst)
		}

		var sink countWriter
		d, err := timed(ctx, &sink, "kubectl", "exec", "-n", benchNamespace, benchPod, "--", "cat", "/data/blob")
		if err != nil {
			return err
		}
		if sink.n != blobSize {
			return fmt.Errorf("kubectl exec cat gave %d bytes", sink.n)
		}
		cat.samples = append(cat.samples, mibps(blobSize, d))
	}
	find := &row{name: "2,000 files in 110 folders, kubectl exec find", unit: "s", baseline: "kubectl exec true (fixed cost)"}
	tree := &row{name: "2,000 files in 110 folders, kubectl cp", unit: "s"}
	trueRow := &row{name: "kubectl exec true (fixed cost)", unit: "s"}
	for i := 0; i < b.runs; i++ {
		var out bytes.Buffer
		d, err := timed(ctx, &out, "kubectl", "exec", "-n", benchNamespace, benchPod, "--", "find", "/data/tree", "-type", "f")
		if err != nil {
			return err
		}
		if n := strings.Count(out.String(), "\n"); n != 2000 {
			return fmt.Errorf("find listed %d files, want 2000", n)
		}
		find.samples = append(find.samples, d.Seconds())

		dst := filepath.Join(b.tmp, fmt.Sprintf("tree%d", i))
		if d, err = timed(ctx, nil, "kubectl", "cp", pod+":/data/tree", dst); err != nil {
			return err
		}
		tree.samples = append(tree.samples, d.Seconds())
		os.RemoveAll(dst)

		if d, err = timed(ctx, nil, "kubectl", "exec", "-n", benchNamespace, benchPod, "--", "true"); err != nil {
			return err
		}
		trueRow.samples = append(trueRow.samples, d.Seconds())
	}
	for _, r := range []*row{cp, cat, cpLog, tree, find, trueRow} {
		b.table.add(r)
	}
	return nil
}

type countWriter struct{ n int64 }

func (w *countWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

// timed runs a command to its end and returns how long it took.
func timed(ctx context.Context, stdout interface{ Write([]byte) (int, error) }, name string, args ...string) (time.Duration, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdout != nil {
		cmd.Stdout = stdout
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return d, nil
}
