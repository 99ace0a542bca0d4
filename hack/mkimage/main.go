// Command mkimage assembles a single-layer container image from local files
// and writes it as a `docker save` archive that `ctr images import` accepts.
// The local cluster has no registry, so every image it runs is built here.
// With -oci it also writes an OCI image layout, which `crane push` or
// `skopeo copy oci:DIR docker://REGISTRY/IMAGE` publish as it is (same
// manifest, same digest); -digest writes that digest.
//
//	mkimage -name kubectl-cz.local/demo:dev -o demo.tar -entrypoint /cz-demo \
//	    -user 65532 .cz/bin/cz-demo=/cz-demo /bin/busybox=/bin/busybox -link /bin/sh=busybox
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var links, envs listFlag
	ref := flag.String("name", "", "image reference, e.g. kubectl-cz.local/demo:dev")
	out := flag.String("o", "", "output archive")
	ociDir := flag.String("oci", "", "also write an OCI image layout to this folder (replaced)")
	format := flag.String("format", "docker", "format of the output archive: docker (docker save's) or oci (an OCI image layout in a tar, which keeps the manifest's digest through an import)")
	digestFile := flag.String("digest", "", "write the image's manifest digest to this file")
	entrypoint := flag.String("entrypoint", "", "entrypoint, space separated")
	user := flag.String("user", "65532:65532", "user the image runs as")
	flag.Var(&links, "link", "symlink PATH=TARGET inside the image (repeatable)")
	flag.Var(&envs, "env", "environment KEY=VALUE (repeatable)")
	flag.Parse()
	if *ref == "" || *out == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: mkimage -name REF -o OUT.tar [-entrypoint CMD] [-link P=T] SRC=DEST ...")
		os.Exit(2)
	}
	if *format != "docker" && *format != "oci" {
		fmt.Fprintln(os.Stderr, "mkimage: -format: want docker or oci")
		os.Exit(2)
	}
	if err := build(*ref, *out, *format, *ociDir, *digestFile, *entrypoint, *user, flag.Args(), links, envs); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func build(ref, out, format, ociDir, digestFile, entrypoint, user string, files, links, envs []string) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return err
	}
	layerTar, err := layerArchive(files, links)
	if err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	cfg.Config.User = user
	cfg.Config.Env = append([]string{"PATH=/bin"}, envs...)
	if entrypoint != "" {
		cfg.Config.Entrypoint = strings.Fields(entrypoint)
	}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return err
	}
	if format == "docker" {
		if err := tarball.WriteToFile(out, tag, img); err != nil {
			return err
		}
	} else if ociDir == "" {
		tmp, err := os.MkdirTemp("", "mkimage-oci-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		ociDir = filepath.Join(tmp, "layout")
	}
	if ociDir != "" {
		if err := os.RemoveAll(ociDir); err != nil {
			return err
		}
		p, err := layout.Write(ociDir, empty.Index)
		if err != nil {
			return err
		}
		// The name for containerd's import, and the OCI name for others.
		if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag.String(), "io.containerd.image.name": tag.String()})); err != nil {
			return err
		}
		if format == "oci" {
			if err := tarFolder(ociDir, out); err != nil {
				return err
			}
		}
	}
	if digestFile != "" {
		d, err := img.Digest()
		if err != nil {
			return err
		}
		return os.WriteFile(digestFile, []byte(d.String()+"\n"), 0o644)
	}
	return nil
}

// tarFolder writes the folder's files into a tar at out, sorted, with fixed
// owners and times, so the same folder gives the same archive.
func tarFolder(dir, out string) error {
	var paths []string
	if err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			paths = append(paths, p)
		}
		return nil
	}); err != nil {
		return err
	}
	sort.Strings(paths)
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: time.Unix(0, 0), Mode: 0o644, Typeflag: tar.TypeReg, Size: fi.Size()}
		if fi.IsDir() {
			h.Name, h.Mode, h.Typeflag, h.Size = h.Name+"/", 0o755, tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if !fi.IsDir() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if _, err := tw.Write(b); err != nil {
				return err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}

// layerArchive builds the layer: each SRC=DEST file with its folders, and the
// symlinks; owned by root, mode kept, fixed times so rebuilds are identical.
func layerArchive(files, links []string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	dirs := map[string]bool{}
	addDirs := func(p string) error {
		var parents []string
		for d := path.Dir(p); d != "/" && d != "."; d = path.Dir(d) {
			parents = append(parents, d)
		}
		sort.Strings(parents)
		for _, d := range parents {
			if dirs[d] {
				continue
			}
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o755, ModTime: epoch}); err != nil {
				return err
			}
		}
		return nil
	}
	// Writable scratch space for programs that need /tmp; pods mount an
	// emptyDir over it when the root filesystem is read-only.
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "tmp/", Mode: 0o1777, ModTime: epoch}); err != nil {
		return nil, err
	}
	for _, f := range files {
		src, dest, ok := strings.Cut(f, "=")
		if !ok || !path.IsAbs(dest) {
			return nil, fmt.Errorf("%q: want SRC=/DEST", f)
		}
		data, err := os.ReadFile(src)
		if err != nil {
			return nil, err
		}
		st, err := os.Stat(src)
		if err != nil {
			return nil, err
		}
		if err := addDirs(dest); err != nil {
			return nil, err
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(dest, "/"), Mode: int64(st.Mode().Perm()), Size: int64(len(data)), ModTime: epoch}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	for _, l := range links {
		p, target, ok := strings.Cut(l, "=")
		if !ok || !path.IsAbs(p) {
			return nil, fmt.Errorf("%q: want /PATH=TARGET", l)
		}
		if err := addDirs(p); err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: strings.TrimPrefix(p, "/"), Linkname: target, Mode: 0o777, ModTime: epoch}); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
