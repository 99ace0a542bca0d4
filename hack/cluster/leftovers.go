package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// A cluster whose processes were killed without `down` (a machine's session
// ending, a crash, a checkout deleted) leaves its network behind: the pod
// bridge with the dead pods' veths still attached, their namespaces kept by
// bind mounts. A new cluster, from another checkout with fresh IPAM state,
// hands the same pod addresses out again on that same bridge, and the
// kubelet's probes reach the dead pod's namespace: "connection refused" for
// every new pod. So `up` first clears what a cluster that no longer runs left
// on the host, whichever state folder it had.

// clearLeftovers removes a dead cluster's host leftovers. It does nothing
// while any component of this layout runs (a warm `up`), and refuses while
// another checkout's cluster runs, since both would share the bridges.
func (l layout) clearLeftovers(t0 time.Time) error {
	for _, c := range l.components() {
		if _, ok := l.running(c); ok {
			return nil
		}
	}
	if pid, what, ok := l.foreignCluster(); ok {
		return fmt.Errorf("another local cluster runs (pid %d, %s): run `make cluster-down` in its checkout first", pid, what)
	}
	if !linkExists(cniBridge) && !linkExists(nodeBridge) && !netnsExists(laptopNetns) {
		return nil
	}
	killPods()
	killShims()
	unmountUnder(runDir)
	unmountPodNetns(l.root)
	removeCgroups()
	cleanIptables()
	for _, br := range []string{cniBridge, nodeBridge} {
		if linkExists(br) {
			if err := run("ip", "link", "del", br); err != nil {
				return fmt.Errorf("remove the bridge %s a stopped cluster left: %w", br, err)
			}
		}
	}
	teardownLaptop()
	step(t0, "removed the network a cluster left that was not brought down (bridges, pod namespaces, iptables chains)")
	return nil
}

// foreignCluster finds an etcd or Kubernetes component of this harness that
// runs from another state folder.
func (l layout) foreignCluster() (int, string, bool) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || len(b) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(args) < 2 {
			continue
		}
		prog := filepath.Base(args[0])
		ours := (prog == "etcd" && args[1] == "--name=cz") ||
			(prog == "kube" && (args[1] == "kube-apiserver" || args[1] == "kubelet"))
		if !ours {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		return pid, prog + " " + args[1], true
	}
	return 0, "", false
}

// unmountPodNetns detaches the pod network namespaces that containerd of
// another state folder bind-mounted (netns_mounts_under_state_dir), so the
// namespaces, and the veths in them, go away.
func unmountPodNetns(ownRoot string) {
	for _, mp := range mountPoints(func(mp, fsType string) bool {
		return fsType == "nsfs" && strings.Contains(mp, "/containerd/state/") && strings.Contains(mp, "/netns/") && !strings.HasPrefix(mp, ownRoot+"/")
	}) {
		_ = unix.Unmount(mp, unix.MNT_DETACH)
	}
}
