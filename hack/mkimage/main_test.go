package main

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// The OCI layout holds the image under its name with the digest -digest
// writes, and the same inputs give the same digest (a release can say it).
func TestOCILayoutAndDigest(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "agent")
	os.WriteFile(bin, []byte("#!/bin/true\n"), 0o755)
	digests := map[string]bool{}
	archives := map[string]bool{}
	for i := 0; i < 2; i++ {
		oci, dig, archive := filepath.Join(dir, "oci"), filepath.Join(dir, "digest"), filepath.Join(dir, "img.tar")
		if err := build("ghcr.io/kubectl-cz/cz-agent:v9.9.9", archive, "oci", oci, dig, "/agent", "65532:65532", []string{bin + "=/agent"}, nil, nil); err != nil {
			t.Fatal(err)
		}
		// The archive is the layout in a tar, byte for byte the same.
		a, _ := os.ReadFile(archive)
		sum := sha256.Sum256(a)
		archives[hex.EncodeToString(sum[:])] = true
		b, _ := os.ReadFile(dig)
		want := strings.TrimSpace(string(b))
		digests[want] = true
		idx, err := layout.ImageIndexFromPath(oci)
		if err != nil {
			t.Fatal(err)
		}
		m, err := idx.IndexManifest()
		if err != nil || len(m.Manifests) != 1 {
			t.Fatalf("index: %v %v", m, err)
		}
		if got := m.Manifests[0].Digest.String(); got != want {
			t.Errorf("layout holds %s, -digest wrote %s", got, want)
		}
		if name := m.Manifests[0].Annotations["org.opencontainers.image.ref.name"]; name != "ghcr.io/kubectl-cz/cz-agent:v9.9.9" {
			t.Errorf("ref name %q", name)
		}
	}
	if len(archives) != 1 {
		t.Errorf("two builds, two archives: %v", archives)
	}
	if len(digests) != 1 {
		t.Errorf("two builds, two digests: %v", digests)
	}
}
