package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// status prints each component's state, the memory the cluster uses, and the
// node and pods as the API server sees them.
func (l layout) status(ctx context.Context) error {
	var totalKiB int
	up := 0
	comps := l.components()
	for _, c := range comps {
		pid, ok := l.running(c)
		if !ok {
			fmt.Printf("%-24s stopped\n", c.name)
			continue
		}
		up++
		pss := pssKiB(pid)
		totalKiB += pss
		fmt.Printf("%-24s running  pid %-7d pss %6.0f MiB\n", c.name, pid, float64(pss)/1024)
	}
	pods := cgroupMemoryKiB()
	fmt.Printf("%-24s %.0f MiB (kubepods cgroup)\n", "pods", float64(pods)/1024)
	fmt.Printf("%-24s %.0f MiB\n", "total memory", float64(totalKiB+pods)/1024)
	if up == 0 {
		fmt.Println("\ncluster is down: run `make cluster-up`")
		return nil
	}
	fmt.Printf("\nkubeconfig: %s\n\n", l.adminKubeconfig())
	return l.kubectl("get", "nodes,pods", "-A", "-o", "wide").run()
}

// pssKiB is a process's proportional set size: the components share one
// binary, and RSS would count its pages once per process.
func pssKiB(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Pss:"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	return 0
}

// cgroupMemoryKiB is the memory charged to the pods (containers and shims are
// outside; shims are small).
func cgroupMemoryKiB() int {
	for _, p := range []string{"/sys/fs/cgroup/memory/kubepods/memory.usage_in_bytes", "/sys/fs/cgroup/kubepods/memory.current"} {
		if b, err := os.ReadFile(p); err == nil {
			n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			return n / 1024
		}
	}
	return 0
}
