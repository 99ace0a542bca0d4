package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func TestManifestFromArchives(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"kubectl-cz_v1.2.3_linux_amd64.tar.gz", "kubectl-cz_v1.2.3_darwin_arm64.tar.gz", "kubectl-cz_v1.2.2_linux_amd64.tar.gz"} {
		os.WriteFile(filepath.Join(dir, name), []byte(name), 0o644)
	}
	ps, err := platforms(dir, "v1.2.3", "https://example.invalid/r/")
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 || ps[0].OS != "darwin" || ps[1].URI != "https://example.invalid/r/kubectl-cz_v1.2.3_linux_amd64.tar.gz" {
		t.Fatalf("%+v", ps)
	}
	want, _ := fileSHA256(filepath.Join(dir, "kubectl-cz_v1.2.3_linux_amd64.tar.gz"))
	if ps[1].SHA256 != want || len(want) != 64 {
		t.Fatalf("sha %s, want %s", ps[1].SHA256, want)
	}
	var buf bytes.Buffer
	if err := manifest.Execute(&buf, map[string]any{"Version": "v1.2.3", "Platforms": ps}); err != nil {
		t.Fatal(err)
	}
	var m struct {
		Kind     string
		Metadata struct{ Name string }
		Spec     struct {
			Version   string
			Platforms []struct {
				Selector         struct{ MatchLabels map[string]string } `json:"selector"`
				URI, SHA256, Bin string
			}
		}
	}
	if err := yaml.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	if m.Kind != "Plugin" || m.Metadata.Name != "cz" || m.Spec.Version != "v1.2.3" || len(m.Spec.Platforms) != 2 ||
		m.Spec.Platforms[1].Bin != "kubectl-cz" || m.Spec.Platforms[1].Selector.MatchLabels["os"] != "linux" {
		t.Fatalf("manifest:\n%s", buf.String())
	}
	if _, err := platforms(dir, "v9.9.9", "x"); err == nil || !strings.Contains(err.Error(), "make dist") {
		t.Fatalf("no archives: %v", err)
	}
}
