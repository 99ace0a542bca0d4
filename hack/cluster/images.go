package main

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// importImages imports every image archive of the folder into containerd's
// k8s.io namespace, where the kubelet finds them (there is no registry here).
func (l layout) importImages(dir string) (int, error) {
	archives, _ := filepath.Glob(filepath.Join(dir, "*.tar"))
	for _, a := range archives {
		if err := run("ctr", "--address", containerdSock, "-n", "k8s.io", "images", "import", "--platform", "linux/amd64", a); err != nil {
			return 0, fmt.Errorf("import image %s: %w", filepath.Base(a), err)
		}
		refs, err := digestRefs(a)
		if err != nil {
			return 0, fmt.Errorf("image %s: %w", filepath.Base(a), err)
		}
		// An image named by tag and digest (the plugin's pinned agent
		// image) is found by its repository and digest alone, a record an
		// import does not make (a pull does).
		for tagged, pinned := range refs {
			if err := run("ctr", "--address", containerdSock, "-n", "k8s.io", "images", "tag", "--force", tagged, pinned); err != nil {
				return 0, fmt.Errorf("name image %s by its digest: %w", tagged, err)
			}
		}
	}
	return len(archives), nil
}

// digestRefs reads an OCI image layout archive's index: each image's tagged
// name with its repository@digest name. A docker archive has none: its
// import makes a manifest of its own, with another digest.
func digestRefs(archive string) (map[string]string, error) {
	f, err := os.Open(archive)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if h.Name != "index.json" {
			continue
		}
		var index struct {
			Manifests []struct {
				Digest      string            `json:"digest"`
				Annotations map[string]string `json:"annotations"`
			} `json:"manifests"`
		}
		if err := json.NewDecoder(io.LimitReader(tr, 1<<20)).Decode(&index); err != nil {
			return nil, fmt.Errorf("index.json: %w", err)
		}
		refs := map[string]string{}
		for _, m := range index.Manifests {
			name := m.Annotations["io.containerd.image.name"]
			colon, slash := strings.LastIndex(name, ":"), strings.LastIndex(name, "/")
			if colon > slash && strings.HasPrefix(m.Digest, "sha256:") {
				refs[name] = name[:colon] + "@" + m.Digest
			}
		}
		return refs, nil
	}
}
