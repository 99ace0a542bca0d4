package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// down stops every process the harness started, the pods' processes, and
// removes what the cluster left outside its state folder: mounts, cgroups,
// iptables chains, bridges, the laptop namespace and the sysctls it changed.
// The state folder stays, so the next `up` is warm.
func (l layout) down() error {
	t0 := time.Now()
	comps := l.components()
	for i := len(comps) - 1; i >= 0; i-- {
		c := comps[i]
		if c.name == "containerd" {
			// The pods go before containerd, which is the only one who knows them.
			killPods()
			killShims()
		}
		if _, ok := l.running(c); !ok {
			continue
		}
		// The API server's state is in etcd and it sometimes lingers after
		// draining; it gets less patience than the others.
		grace := 15 * time.Second
		if c.name == "kube-apiserver" {
			grace = 5 * time.Second
		}
		if err := l.stop(c, grace); err != nil {
			return fmt.Errorf("stop %s: %w", c.name, err)
		}
		step(t0, "%s stopped", c.name)
	}
	killShims()
	unmountUnder(l.root)
	unmountUnder(runDir)
	removeCgroups()
	cleanIptables()
	for _, br := range []string{cniBridge, nodeBridge} {
		if linkExists(br) {
			_ = run("ip", "link", "del", br)
		}
	}
	teardownLaptop()
	l.restoreSysctls()
	l.removeHostLeftovers()
	_ = os.RemoveAll(runDir)
	fmt.Println("cluster down: processes stopped, network and mounts removed; state kept in", l.root)
	return nil
}

// cgroupRoots are the v1 hierarchies (and the v2 one) that can hold kubepods.
func cgroupRoots() []string {
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods")
	if exists("/sys/fs/cgroup/kubepods") {
		dirs = append(dirs, "/sys/fs/cgroup/kubepods")
	}
	return dirs
}

// killPods SIGKILLs every process in the kubelet's kubepods cgroups: those are
// the containers of this cluster and nothing else.
func killPods() {
	for round := 0; round < 20; round++ {
		found := false
		for _, root := range cgroupRoots() {
			_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
				if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
					return nil
				}
				b, _ := os.ReadFile(p)
				for _, f := range strings.Fields(string(b)) {
					if pid, err := strconv.Atoi(f); err == nil {
						found = true
						_ = syscall.Kill(pid, syscall.SIGKILL)
					}
				}
				return nil
			})
		}
		if !found {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// killShims ends the containerd shims that serve our containerd: their
// command line names our socket.
func killShims() {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if !strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") {
			continue
		}
		for i, a := range args {
			if a == "-address" && i+1 < len(args) && args[i+1] == containerdSock {
				pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
				_ = syscall.Kill(pid, syscall.SIGKILL)
				waitGone(pid, 2*time.Second)
			}
		}
	}
}

// unmountUnder lazily unmounts every mount point below dir, deepest first
// (overlay rootfs, pod netns, secret and token tmpfs).
func unmountUnder(dir string) {
	points := mountPoints(func(mp, _ string) bool { return mp == dir || strings.HasPrefix(mp, dir+"/") })
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	for _, mp := range points {
		_ = unix.Unmount(mp, unix.MNT_DETACH)
	}
}

// mountPoints are this process's mount points that match, by mount point
// and file system type.
func mountPoints(match func(point, fsType string) bool) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// mount ID, parent, major:minor, root, mount point, options...,
		// "-", file system type, source, super options
		fields := strings.Fields(sc.Text())
		fsType := ""
		for i, f := range fields {
			if f == "-" && i+1 < len(fields) {
				fsType = fields[i+1]
				break
			}
		}
		if len(fields) >= 5 && match(unescapeMount(fields[4]), fsType) {
			points = append(points, unescapeMount(fields[4]))
		}
	}
	return points
}

func unescapeMount(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

// removeCgroups removes the kubepods cgroup trees, deepest first.
func removeCgroups() {
	for _, root := range cgroupRoots() {
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			_ = os.Remove(d)
		}
	}
}

// removeHostLeftovers removes what the kubelet and containerd write to fixed
// host paths whatever their configuration says.
func (l layout) removeHostLeftovers() {
	// Symlinks to our pods' logs.
	links, _ := filepath.Glob("/var/log/containers/*.log")
	for _, link := range links {
		if target, err := os.Readlink(link); err == nil && strings.HasPrefix(target, l.path("pod-logs")) {
			_ = os.Remove(link)
		}
	}
	_ = os.Remove("/var/log/containers") // only if empty
	// The kubelet's device-plugin socket folder is a constant path.
	_ = os.RemoveAll("/var/lib/kubelet/device-plugins")
	_ = os.RemoveAll("/var/lib/kubelet/plugins_registry")
	_ = os.RemoveAll("/var/lib/kubelet/plugins")
	_ = os.Remove("/var/lib/kubelet")
	// Shim sockets and fifos of containerd 1.6 use fixed paths too; remove
	// them only when no other containerd runs on this machine.
	if !otherContainerd() {
		for _, d := range []string{"/run/containerd/s", "/run/containerd/fifo", "/run/containerd/runc"} {
			_ = os.RemoveAll(d)
		}
		_ = os.Remove("/run/containerd")
	}
}

func otherContainerd() bool {
	procs, _ := filepath.Glob("/proc/[0-9]*/comm")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), "containerd") {
			return true
		}
	}
	return false
}
