package main

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestSplitRuleHonoursQuotes(t *testing.T) {
	got := splitRule(`-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`)
	want := []string{"-A", "OUTPUT", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q", got)
	}
	if got := splitRule(`-A X --comment "a \"quoted\" word" -j DROP`); got[3] != `a "quoted" word` {
		t.Fatalf("escaped quotes: %q", got)
	}
}

func TestOwnChain(t *testing.T) {
	for name, want := range map[string]bool{"KUBE-SERVICES": true, "CNI-abc": true, "CZ-LAPTOP": true, "INPUT": false, "DOCKER": false} {
		if ownChain(name) != want {
			t.Errorf("ownChain(%s) = %v", name, !want)
		}
	}
}

// The certificates chain to their CA, carry the identities RBAC and the Node
// authorizer expect, and survive a second run unchanged (a restart keeps them).
func TestEnsurePKI(t *testing.T) {
	dir := t.TempDir()
	if err := ensurePKI(dir); err != nil {
		t.Fatal(err)
	}
	ca := loadCert(t, filepath.Join(dir, "ca.crt"))
	pool := x509.NewCertPool()
	pool.AddCert(ca)

	api := loadCert(t, filepath.Join(dir, "apiserver.crt"))
	if _, err := api.Verify(x509.VerifyOptions{Roots: pool, DNSName: "kubernetes.default.svc.cluster.local"}); err != nil {
		t.Fatal(err)
	}
	for _, ip := range []string{nodeIP, apiServiceIP} {
		found := false
		for _, got := range api.IPAddresses {
			found = found || got.Equal(net.ParseIP(ip))
		}
		if !found {
			t.Errorf("apiserver certificate lacks IP %s", ip)
		}
	}
	kubelet := loadCert(t, filepath.Join(dir, "kubelet-client.crt"))
	if kubelet.Subject.CommonName != "system:node:"+nodeName || kubelet.Subject.Organization[0] != "system:nodes" {
		t.Errorf("kubelet identity %v", kubelet.Subject)
	}
	if _, err := kubelet.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}

	before, _ := os.ReadFile(filepath.Join(dir, "sa.key"))
	if err := ensurePKI(dir); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "sa.key"))
	if string(before) != string(after) {
		t.Fatal("a second run replaced the service-account key")
	}
}

func loadCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// mountPoints reads mount points with their file system type.
func TestMountPoints(t *testing.T) {
	procs := mountPoints(func(_, fsType string) bool { return fsType == "proc" })
	found := false
	for _, mp := range procs {
		found = found || mp == "/proc"
	}
	if !found {
		t.Errorf("no /proc among the proc mounts: %v", procs)
	}
	if root := mountPoints(func(mp, _ string) bool { return mp == "/" }); len(root) == 0 {
		t.Error("no / mount point")
	}
}
