package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

var mountActive = regexp.MustCompile(`mounted after ([0-9.]+)s`)

// mount measures `kubectl cz mount` of the bench pod's /data beside kubectl
// cp and exec (the kubectl section's rows, same run): time to mounted,
// reading 100 MiB files (random bytes, then a log, which compresses; the
// log again through a mount with --compress),
// writes, copying the 2,000-file tree (cold, then warm), and walking a copy
// of it made in the pod (cold) and it (warm).
func (b *bench) mount(ctx context.Context) error {
	fmt.Fprintln(os.Stderr, "bench: kubectl cz mount")
	dir, err := os.MkdirTemp("", "cz-bench-mount-")
	if err != nil {
		return err
	}
	defer os.Remove(dir)
	active := &row{name: "time from start to mounted, kubectl cz mount", unit: "s"}
	read := &row{name: "100 MiB file, kubectl cz mount (read)", unit: "MiB/s", baseline: "100 MiB file, kubectl cp"}
	readLog := &row{name: "100 MiB log file, kubectl cz mount (read)", unit: "MiB/s", baseline: "100 MiB log file, kubectl cp"}
	tree := &row{name: "2,000 files in 110 folders, kubectl cz mount (cp -r)", unit: "s", baseline: "2,000 files in 110 folders, kubectl cp"}
	retree := &row{name: "2,000 files in 110 folders, kubectl cz mount (cp -r again, warm)", unit: "s", baseline: "2,000 files in 110 folders, kubectl cp"}
	walk := &row{name: "2,000 files in 110 folders, kubectl cz mount (find, cold)", unit: "s", baseline: "2,000 files in 110 folders, kubectl exec find"}
	reread := &row{name: "100 MiB file read again, unchanged, kubectl cz mount (page cache)", unit: "MiB/s", baseline: "100 MiB file, kubectl cz mount (read)"}
	write := &row{name: "10 MiB write + fsync, kubectl cz mount", unit: "MiB/s", baseline: "POST 100 MiB, kubectl port-forward (spdy)"}
	writeRandom := &row{name: "10 MiB write + fsync, random data, kubectl cz mount", unit: "MiB/s", baseline: "POST 100 MiB, kubectl port-forward (spdy)"}
	// The same 100 MiB as the POST: the rate once a file's fixed costs
	// (its create, first MiB, stream open, the pod's fsync) are paid.
	writeBig := &row{name: "100 MiB write + fsync, random data, kubectl cz mount", unit: "MiB/s", baseline: "POST 100 MiB, kubectl port-forward (spdy)"}
	gitStatus := &row{name: "git status in a 2,000-file repository, kubectl cz mount (warm)", unit: "s"}
	rewalk := &row{name: "2,000 files in 110 folders, kubectl cz mount (find again, warm)", unit: "s"}
	readLogZstd := &row{name: "100 MiB log file, kubectl cz mount --compress (read)", unit: "MiB/s", baseline: "100 MiB log file, kubectl cz mount (read)"}
	for run := 0; run < b.runs; run++ {
		cmd, secs, err := startMount(ctx, dir)
		if err != nil {
			return err
		}
		active.samples = append(active.samples, secs)
		data := filepath.Join(dir, "data")
		t0 := time.Now()
		f, err := os.Open(filepath.Join(data, "blob"))
		if err == nil {
			var n int64
			n, err = io.Copy(io.Discard, f)
			f.Close()
			if err == nil && n != blobSize {
				err = fmt.Errorf("read %d bytes of the blob, want %d", n, blobSize)
			}
		}
		if err == nil {
			read.samples = append(read.samples, mibps(blobSize, time.Since(t0)))
			t0 = time.Now()
			var n int64
			if n, err = readFile(filepath.Join(data, "blob")); err == nil && n != blobSize {
				err = fmt.Errorf("read %d bytes of the blob again, want %d", n, blobSize)
			}
			reread.samples = append(reread.samples, mibps(blobSize, time.Since(t0)))
		}
		// A log, which compresses (~8x), read as it is (see --compress below).
		if err == nil {
			t0 = time.Now()
			var n int64
			if n, err = readFile(filepath.Join(data, "log")); err == nil && n != blobSize {
				err = fmt.Errorf("read %d bytes of the log, want %d", n, blobSize)
			}
			if err == nil {
				readLog.samples = append(readLog.samples, mibps(blobSize, time.Since(t0)))
			}
		}
		// Writes of a repeating pattern (text, source and build outputs
		// compress too), and of random bytes, which do not.
		for _, w := range []struct {
			r      *row
			n      int
			random bool
		}{{write, 10 << 20, false}, {writeRandom, 10 << 20, true}, {writeBig, 100 << 20, true}} {
			if err != nil {
				break
			}
			t0 = time.Now()
			if err = writeSynced(filepath.Join(data, fmt.Sprintf("written-%d", run)), w.n, w.random); err == nil {
				w.r.samples = append(w.r.samples, mibps(int64(w.n), time.Since(t0)))
			}
			os.Remove(filepath.Join(data, fmt.Sprintf("written-%d", run)))
		}
		// The same copy twice: out of a fresh mount, then from the kernel's
		// caches (a warm copy once fetched every folder again: 4x the cold).
		for _, r := range []*row{tree, retree} {
			if err != nil {
				break
			}
			dst := filepath.Join(b.tmp, fmt.Sprintf("mount-tree-%d", run))
			t0 = time.Now()
			if out, cerr := exec.CommandContext(ctx, "cp", "-r", filepath.Join(data, "tree"), dst).CombinedOutput(); cerr != nil {
				err = fmt.Errorf("cp -r: %v: %s", cerr, out)
			} else {
				r.samples = append(r.samples, time.Since(t0).Seconds())
			}
			os.RemoveAll(dst)
		}
		if err == nil { // the tree cp -r listed
			var d float64
			if d, err = findFiles(ctx, filepath.Join(data, "tree")); err == nil {
				rewalk.samples = append(rewalk.samples, d)
			}
		}
		if err == nil {
			var cold, status float64
			if cold, status, err = b.gitStatus(ctx, data); err == nil {
				walk.samples = append(walk.samples, cold)
				gitStatus.samples = append(gitStatus.samples, status)
			}
		}
		if serr := stopPlugin(cmd); err == nil && serr != nil {
			err = fmt.Errorf("mount exit: %w", serr)
		}
		if err != nil {
			return err
		}
	}
	for run := 0; run < b.runs; run++ {
		// The log once more through a mount that asks for compression:
		// both ways of the same bytes in one run.
		cmd, _, err := startMount(ctx, dir, "--compress")
		if err != nil {
			return err
		}
		t0 := time.Now()
		n, err := readFile(filepath.Join(dir, "data", "log"))
		if err == nil && n != blobSize {
			err = fmt.Errorf("read %d bytes of the log, want %d", n, blobSize)
		}
		if err == nil {
			readLogZstd.samples = append(readLogZstd.samples, mibps(blobSize, time.Since(t0)))
		}
		if serr := stopPlugin(cmd); err == nil && serr != nil {
			err = fmt.Errorf("mount exit: %w", serr)
		}
		if err != nil {
			return err
		}
	}
	for _, r := range []*row{active, read, reread, readLog, readLogZstd, write, writeRandom, writeBig, tree, retree, walk, rewalk, gitStatus} {
		b.table.add(r)
	}
	return nil
}

// startMount mounts the bench pod at dir, in the laptop's network
// namespace only (so the mount is visible here), and returns once it says
// it is mounted, with the seconds that took.
func startMount(ctx context.Context, dir string, flags ...string) (*exec.Cmd, float64, error) {
	args := append([]string{"--net=/var/run/netns/" + laptopNetns, "kubectl-cz", "-n", benchNamespace,
		"mount", "pod", benchPod, dir, "--agent-pull-policy", "Never"}, flags...)
	cmd := exec.CommandContext(ctx, "nsenter", args...)
	cmd.Env = append(os.Environ(), "KUBECTL_CZ_STATE_DIR="+os.TempDir()+"/cz-bench-state")
	secs, err := waitActive(cmd, mountActive)
	return cmd, secs, err
}

func countLines(b []byte) int {
	n := 0
	for _, c := range b {
		if c == '\n' {
			n++
		}
	}
	return n
}

func readFile(p string) (int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return io.Copy(io.Discard, f)
}

// writeSynced writes n bytes (a repeating pattern, or random) in 1 MiB
// writes and fsyncs them.
func writeSynced(p string, n int, random bool) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	if random {
		rand.Read(buf)
	}
	for written := 0; written < n; written += len(buf) {
		if _, err := f.Write(buf); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("fsync: %w", err)
	}
	return f.Close()
}

// gitStatus makes a copy of the tree in the pod, times a find over it (its
// folders never listed by the mount: cold), makes a git repository of it
// (committed through the mount), runs git status once to warm the caches
// and times the second; the copy is removed in the pod.
func (b *bench) gitStatus(ctx context.Context, data string) (coldFind, status float64, err error) {
	inPod := func(script string) error {
		out, err := exec.CommandContext(ctx, "kubectl", "exec", "-n", benchNamespace, benchPod, "--", "sh", "-c", script).CombinedOutput()
		if err != nil {
			return fmt.Errorf("in the pod: %v: %s", err, out)
		}
		return nil
	}
	if err := inPod("rm -rf /data/repo && cp -r /data/tree /data/repo"); err != nil {
		return 0, 0, err
	}
	defer inPod("rm -rf /data/repo")
	repo := filepath.Join(data, "repo")
	// Untimed: the new folder shows once the file server's watch told the
	// mount (or its 1 s caches expired).
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 5*time.Second, true, func(context.Context) (bool, error) {
		_, err := os.Stat(filepath.Join(repo, "d110"))
		return err == nil, nil
	}); err != nil {
		return 0, 0, fmt.Errorf("the tree copied in the pod did not show in the mount: %w", err)
	}
	if coldFind, err = findFiles(ctx, repo); err != nil {
		return 0, 0, err
	}
	git := func(args ...string) error {
		cmd := exec.CommandContext(ctx, "git", append([]string{"-C", repo, "-c", "user.email=bench@laptop", "-c", "user.name=bench"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("git %v: %v: %s", args, err, out)
		}
		return nil
	}
	for _, args := range [][]string{{"init", "-q"}, {"add", "-A"}, {"commit", "-q", "-m", "bench"}, {"status", "--porcelain"}} {
		if err := git(args...); err != nil {
			return 0, 0, err
		}
	}
	t0 := time.Now()
	if err := git("status", "--porcelain"); err != nil {
		return 0, 0, err
	}
	return coldFind, time.Since(t0).Seconds(), nil
}

// findFiles times a find of the files under dir, which must be the bench
// tree's 2,000.
func findFiles(ctx context.Context, dir string) (float64, error) {
	t0 := time.Now()
	out, err := exec.CommandContext(ctx, "find", dir, "-type", "f").Output()
	if err != nil {
		return 0, fmt.Errorf("find %s: %v", dir, err)
	}
	if n := countLines(out); n != 2000 {
		return 0, fmt.Errorf("find saw %d files in %s, want 2000", n, dir)
	}
	return time.Since(t0).Seconds(), nil
}
