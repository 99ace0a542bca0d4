package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// run runs a command and returns its error with its output, for the harness's
// plumbing commands (ip, iptables, ctr).
func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func output(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).Output()
	return string(out), err
}

func linkExists(name string) bool { return run("ip", "link", "show", name) == nil }

func netnsExists(name string) bool { return exists(filepath.Join("/run/netns", name)) }

// setupNodeNetwork gives the node its own address on a bridge the harness
// owns; the API server and kubelet listen there and nowhere else.
func setupNodeNetwork() error {
	if !linkExists(nodeBridge) {
		if err := run("ip", "link", "add", nodeBridge, "type", "bridge"); err != nil {
			return err
		}
	}
	if out, _ := output("ip", "-4", "addr", "show", "dev", nodeBridge); !strings.Contains(out, nodeIP+"/") {
		if err := run("ip", "addr", "add", nodeCIDR, "dev", nodeBridge); err != nil {
			return err
		}
	}
	if err := run("ip", "link", "set", nodeBridge, "up"); err != nil {
		return err
	}
	// Pods reach Services through kube-proxy's DNAT, which needs forwarding
	// and bridged traffic seen by iptables. The old values are kept and put
	// back on cluster-down.
	return nil
}

// sysctls the cluster needs, with the value it needs.
var sysctls = map[string]string{
	"net/ipv4/ip_forward":                 "1",
	"net/bridge/bridge-nf-call-iptables":  "1",
	"net/bridge/bridge-nf-call-ip6tables": "1",
}

func (l layout) setSysctls() error {
	saved := l.path("sysctl.saved")
	if !exists(saved) {
		var b strings.Builder
		for k := range sysctls {
			v, err := os.ReadFile(filepath.Join("/proc/sys", k))
			if err != nil {
				continue
			}
			fmt.Fprintf(&b, "%s=%s\n", k, strings.TrimSpace(string(v)))
		}
		if err := os.WriteFile(saved, []byte(b.String()), 0o644); err != nil {
			return err
		}
	}
	for k, v := range sysctls {
		if err := os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("sysctl %s: %w", k, err)
		}
	}
	return nil
}

func (l layout) restoreSysctls() {
	b, err := os.ReadFile(l.path("sysctl.saved"))
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if ok {
			_ = os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644)
		}
	}
	_ = os.Remove(l.path("sysctl.saved"))
}

// setupLaptop creates the "laptop": a network namespace joined to the host by
// a veth, with a route to the API server's address only, and a raw-table
// filter so that even a route added later reaches nothing but port 6443.
// Its resolver files live in /etc/netns/<name>/, which `ip netns exec`
// mounts over /etc, so tests never touch this machine's own files.
func setupLaptop() error {
	if !netnsExists(laptopNetns) {
		if err := run("ip", "netns", "add", laptopNetns); err != nil {
			return err
		}
	}
	if !linkExists(laptopHostIf) {
		if err := run("ip", "link", "add", laptopHostIf, "type", "veth", "peer", "name", "eth0", "netns", laptopNetns); err != nil {
			return err
		}
	}
	if out, _ := output("ip", "-4", "addr", "show", "dev", laptopHostIf); !strings.Contains(out, laptopHostIP+"/") {
		if err := run("ip", "addr", "add", laptopHostIP+"/30", "dev", laptopHostIf); err != nil {
			return err
		}
	}
	if err := run("ip", "link", "set", laptopHostIf, "up"); err != nil {
		return err
	}
	in := func(args ...string) error { return run("ip", append([]string{"-n", laptopNetns}, args...)...) }
	if out, _ := output("ip", "-n", laptopNetns, "-4", "addr", "show", "dev", "eth0"); !strings.Contains(out, laptopIP+"/") {
		if err := in("addr", "add", laptopIP+"/30", "dev", "eth0"); err != nil {
			return err
		}
	}
	for _, dev := range []string{"lo", "eth0"} {
		if err := in("link", "set", dev, "up"); err != nil {
			return err
		}
	}
	if err := in("route", "replace", nodeIP+"/32", "via", laptopHostIP, "dev", "eth0"); err != nil {
		return err
	}
	if err := laptopFilter(); err != nil {
		return err
	}
	etc := filepath.Join("/etc/netns", laptopNetns)
	if err := os.MkdirAll(etc, 0o755); err != nil {
		return err
	}
	files := map[string]string{
		"resolv.conf": "# The laptop namespace of the kubectl-cz local cluster: no resolver of its own.\nnameserver 127.0.0.1\n",
		"hosts":       "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
	}
	for name, content := range files {
		// Only seed them: a test or teleport may have changed them since.
		if p := filepath.Join(etc, name); !exists(p) {
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

const laptopChain = "CZ-LAPTOP"

func laptopFilter() error {
	ipt := func(args ...string) error { return run("iptables", append([]string{"-w", "-t", "raw"}, args...)...) }
	if run("iptables", "-w", "-t", "raw", "-n", "-L", laptopChain) != nil {
		if err := ipt("-N", laptopChain); err != nil {
			return err
		}
	}
	if err := ipt("-F", laptopChain); err != nil {
		return err
	}
	if err := ipt("-A", laptopChain, "-d", nodeIP+"/32", "-p", "tcp", "--dport", apiPort, "-j", "RETURN"); err != nil {
		return err
	}
	if err := ipt("-A", laptopChain, "-j", "DROP"); err != nil {
		return err
	}
	if ipt("-C", "PREROUTING", "-i", laptopHostIf, "-j", laptopChain) != nil {
		return ipt("-I", "PREROUTING", "-i", laptopHostIf, "-j", laptopChain)
	}
	return nil
}

func teardownLaptop() {
	_ = run("iptables", "-w", "-t", "raw", "-D", "PREROUTING", "-i", laptopHostIf, "-j", laptopChain)
	if linkExists(laptopHostIf) {
		_ = run("ip", "link", "del", laptopHostIf)
	}
	if netnsExists(laptopNetns) {
		_ = run("ip", "netns", "del", laptopNetns)
	}
	_ = os.RemoveAll(filepath.Join("/etc/netns", laptopNetns))
}

// ownChain is true for the chains the cluster creates: kube-proxy's and the
// kubelet's KUBE-*, CNI plugins' CNI-*, and ours.
func ownChain(name string) bool {
	return strings.HasPrefix(name, "KUBE-") || strings.HasPrefix(name, "CNI-") || strings.HasPrefix(name, "CZ-")
}

// cleanIptables removes every rule that jumps to one of our chains, then the
// chains, in every table, for IPv4 and IPv6.
func cleanIptables() {
	for _, ipt := range []string{"iptables", "ip6tables"} {
		for _, table := range []string{"raw", "mangle", "nat", "filter"} {
			dump, err := output(ipt+"-save", "-t", table)
			if err != nil {
				continue
			}
			var chains []string
			for _, line := range strings.Split(dump, "\n") {
				if strings.HasPrefix(line, ":") {
					if name := strings.Fields(line[1:])[0]; ownChain(name) {
						chains = append(chains, name)
					}
					continue
				}
				if !strings.HasPrefix(line, "-A ") {
					continue
				}
				args := splitRule(line)
				if len(args) < 2 || ownChain(args[1]) {
					continue
				}
				for i, a := range args {
					if (a == "-j" || a == "-g") && i+1 < len(args) && ownChain(args[i+1]) {
						del := append([]string{"-w", "-t", table, "-D"}, args[1:]...)
						_ = run(ipt, del...)
						break
					}
				}
			}
			for _, c := range chains {
				_ = run(ipt, "-w", "-t", table, "-F", c)
			}
			for _, c := range chains {
				_ = run(ipt, "-w", "-t", table, "-X", c)
			}
		}
	}
}

// splitRule splits an iptables-save line into arguments, honouring the double
// quotes iptables-save puts around comments.
func splitRule(line string) []string {
	var args []string
	var cur strings.Builder
	inQuote, have := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\\' && inQuote && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case c == '"':
			inQuote, have = !inQuote, true
		case c == ' ' && !inQuote:
			if have {
				args = append(args, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteByte(c)
			have = true
		}
	}
	if have {
		args = append(args, cur.String())
	}
	return args
}
