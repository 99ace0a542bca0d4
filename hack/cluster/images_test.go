package main

import (
	"archive/tar"
	"os"
	"path/filepath"
	"testing"
)

// An OCI archive's tagged image gets its repository@digest name; a docker
// archive (no index.json) gets none.
func TestDigestRefs(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, files map[string]string) string {
		p := filepath.Join(dir, name)
		f, _ := os.Create(p)
		tw := tar.NewWriter(f)
		for n, body := range files {
			tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(body))})
			tw.Write([]byte(body))
		}
		tw.Close()
		f.Close()
		return p
	}
	d := "sha256:" + "ab12000000000000000000000000000000000000000000000000000000000000"[:64]
	oci := write("oci.tar", map[string]string{"oci-layout": `{}`, "index.json": `{"manifests":[{"digest":"` + d + `","annotations":{"io.containerd.image.name":"reg.example:5000/cz-agent:v1"}}]}`})
	refs, err := digestRefs(oci)
	if err != nil || len(refs) != 1 || refs["reg.example:5000/cz-agent:v1"] != "reg.example:5000/cz-agent@"+d {
		t.Errorf("oci: %v %v", refs, err)
	}
	docker := write("docker.tar", map[string]string{"manifest.json": `[]`})
	if refs, err := digestRefs(docker); err != nil || len(refs) != 0 {
		t.Errorf("docker: %v %v", refs, err)
	}
}
