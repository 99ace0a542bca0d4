//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// startInLaptopNet runs a command in the laptop's network namespace only:
// its FUSE mount is then in this machine's mount namespace, where the test
// can look at it (`ip netns exec` would give it a mount namespace of its own).
func startInLaptopNet(t *testing.T, env []string, name string, args ...string) *proc {
	t.Helper()
	return startCmd(t, env, append([]string{"nsenter", "--net=/var/run/netns/" + laptopNetns, name}, args...))
}

// filesTarget is a pod with an emptyDir seeded with a file and a ConfigMap
// volume, running as user 1000, with a shell to check from the inside.
func filesTarget(t *testing.T, cs kubernetes.Interface) string {
	t.Helper()
	ctx := context.Background()
	name := "files-target"
	_ = cs.CoreV1().Pods(demoNamespace).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
	waitUntil(t, 60*time.Second, func() bool {
		_, err := cs.CoreV1().Pods(demoNamespace).Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	_ = cs.CoreV1().ConfigMaps(demoNamespace).Delete(ctx, name, metav1.DeleteOptions{})
	if _, err := cs.CoreV1().ConfigMaps(demoNamespace).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"greeting": "hi"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	runToolbox(t, cs, name, "echo seed > /work/seed.txt && exec sleep 3600",
		[]corev1.VolumeMount{{Name: "work", MountPath: "/work"}, {Name: "cfg", MountPath: "/etc/app", ReadOnly: true}},
		[]corev1.Volume{
			{Name: "work", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: name}}}},
		})
	t.Cleanup(func() {
		_ = cs.CoreV1().ConfigMaps(demoNamespace).Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return name
}

// runToolbox runs a pod of the toolbox image (a shell and busybox) in the
// demo namespace, as the restricted Pod Security level allows, until the
// test ends; it returns once the pod runs.
func runToolbox(t *testing.T, cs kubernetes.Interface, name, script string, mounts []corev1.VolumeMount, volumes []corev1.Volume) {
	t.Helper()
	ctx := context.Background()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](1000), RunAsGroup: ptr.To[int64](1000), FSGroup: ptr.To[int64](1000),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			Containers: []corev1.Container{{
				Name: "main", Image: "kubectl-cz.local/toolbox:dev", ImagePullPolicy: corev1.PullIfNotPresent,
				Command:         []string{"sh", "-c", script},
				SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
				VolumeMounts:    mounts,
			}},
			Volumes:                       volumes,
			TerminationGracePeriodSeconds: ptr.To[int64](0),
		},
	}
	if _, err := cs.CoreV1().Pods(demoNamespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().Pods(demoNamespace).Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
	})
	waitUntil(t, 60*time.Second, func() bool {
		p, err := cs.CoreV1().Pods(demoNamespace).Get(ctx, name, metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodRunning
	})
}

func inPod(t *testing.T, pod string, args ...string) string {
	t.Helper()
	r := onLaptop(t, 30*time.Second, "kubectl", append([]string{"-n", demoNamespace, "exec", pod, "-c", "main", "--"}, args...)...)
	if r.err != nil {
		t.Fatalf("exec %v: %v %s", args, r.err, r.stderr)
	}
	return r.stdout
}

// isMountpoint reads the mount table (a dead FUSE mount cannot be stat'ed).
func isMountpoint(dir string) bool { return mountedIn("self", dir) }

// holdMountNamespace keeps the mount namespace of process pid (a plugin
// that `ip netns exec` gave one of its own) alive past that process, by a
// process of the test's in it, and returns a check of its mount table: a
// mount the plugin failed to take down would still be there.
func holdMountNamespace(t *testing.T, pid int) func(dir string) bool {
	t.Helper()
	holder := exec.Command("nsenter", "-t", strconv.Itoa(pid), "-m", "sleep", "600")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = holder.Process.Kill(); _ = holder.Wait() })
	// nsenter enters the namespace after it starts.
	want, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	waitUntil(t, 10*time.Second, func() bool {
		got, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", holder.Process.Pid))
		return got == want
	})
	return func(dir string) bool { return mountedIn(strconv.Itoa(holder.Process.Pid), dir) }
}

// mountedIn reads the mount table of process pid ("self": this one's).
func mountedIn(pid, dir string) bool {
	b, _ := os.ReadFile("/proc/" + pid + "/mounts")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[1] == dir {
			return true
		}
	}
	return false
}

// A pod's volumes as a local folder: read, write (as the pod's user), git,
// a read-only ConfigMap volume; Ctrl-C unmounts and leaves no journal.
func TestMountReadWriteGit(t *testing.T) {
	cs := clientset(t)
	pod := filesTarget(t, cs)
	dir := t.TempDir()
	p := startInLaptopNet(t, machine(t), "kubectl-cz", "-n", demoNamespace, "mount", "pod", pod, dir, "--agent-pull-policy", "Never")
	id := strings.Fields(p.waitFor("session ", 30*time.Second))[1]
	p.waitFor("mounted after", 90*time.Second)

	if b, err := os.ReadFile(filepath.Join(dir, "work", "seed.txt")); err != nil || string(b) != "seed\n" {
		t.Fatalf("seed file: %q %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "etc", "app", "greeting")); err != nil || string(b) != "hi" {
		t.Fatalf("ConfigMap volume: %q %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "work", "from-laptop.txt"), []byte("written on the laptop\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := inPod(t, pod, "cat", "/work/from-laptop.txt"); got != "written on the laptop\n" {
		t.Fatalf("the pod reads %q", got)
	}
	if owner := strings.TrimSpace(inPod(t, pod, "stat", "-c", "%u", "/work/from-laptop.txt")); owner != "1000" {
		t.Errorf("a file written through the mount belongs to %s in the pod, want the pod's user 1000", owner)
	}
	if err := os.WriteFile(filepath.Join(dir, "etc", "app", "greeting"), []byte("x"), 0o644); err == nil {
		t.Error("a read-only ConfigMap volume took a write")
	}
	work := filepath.Join(dir, "work")
	for _, args := range [][]string{{"init", "-q"}, {"add", "-A"}, {"commit", "-q", "-m", "from the laptop"}} {
		cmd := exec.Command("git", append([]string{"-C", work, "-c", "user.email=dev@laptop", "-c", "user.name=dev"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	if got := inPod(t, pod, "cat", "/work/.git/HEAD"); !strings.HasPrefix(got, "ref: refs/heads/") {
		t.Fatalf("the pod's .git/HEAD: %q", got)
	}
	out, err := exec.Command("grep", "-rl", "written on the laptop", work).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "from-laptop.txt") {
		t.Fatalf("grep -r: %v %s", err, out)
	}

	// The network drops the laptop's connections to the API server (ss -K
	// destroys them): the next operation goes over a new port-forward.
	killed, err := exec.Command("ip", "netns", "exec", laptopNetns, "ss", "-tnK", "dst", "10.220.0.1", "dport", "=", "6443").Output()
	if err != nil || !strings.Contains(string(killed), "ESTAB") {
		t.Fatalf("could not drop the connections (%v): %s", err, killed)
	}
	time.Sleep(1500 * time.Millisecond) // past the kernel's cache of names and attributes
	if b, err := os.ReadFile(filepath.Join(dir, "work", "seed.txt")); err != nil || string(b) != "seed\n" {
		t.Fatalf("after the connection dropped: %q %v", b, err)
	}

	p.signal(syscall.SIGTERM)
	if err := p.wait(30 * time.Second); err != nil {
		t.Fatalf("exit: %v\n%s", err, p.output())
	}
	if isMountpoint(dir) {
		t.Fatal("still mounted after Ctrl-C")
	}
	if configMapExists(t, cs, "cz-session-"+id) {
		t.Fatalf("the session's journal is still there after Ctrl-C:\n%s", p.output())
	}
}

// --read-only refuses writes; kill -9 leaves a dead mount that the next
// command on the machine takes away.
func TestMountReadOnlyAndCrash(t *testing.T) {
	cs := clientset(t)
	pod := filesTarget(t, cs)
	dir := t.TempDir()
	env := machine(t)
	p := startInLaptopNet(t, env, "kubectl-cz", "-n", demoNamespace, "mount", "pod", pod, dir, "--read-only", "--agent-pull-policy", "Never")
	id := strings.Fields(p.waitFor("session ", 30*time.Second))[1]
	line := p.waitFor("mounted after", 90*time.Second)
	if err := os.WriteFile(filepath.Join(dir, "work", "x"), []byte("x"), 0o644); err == nil {
		t.Fatalf("--read-only took a write (%s)", line)
	}
	p.signal(syscall.SIGKILL)
	_ = p.wait(10 * time.Second)
	if !isMountpoint(dir) {
		t.Fatal("kill -9 left no mount: the test proves nothing")
	}
	// The next command, in the same mount namespace as the dead mount.
	c := startInLaptopNet(t, env, testPlugin(t), "-n", demoNamespace, "session", "close", id)
	if err := c.wait(60 * time.Second); err != nil || isMountpoint(dir) || !strings.Contains(c.output(), "recovered session "+id) {
		t.Fatalf("session close after a crash: %v mounted=%v\n%s", err, isMountpoint(dir), c.output())
	}
	if configMapExists(t, cs, "cz-session-"+id) {
		t.Fatal("the session's journal is still there")
	}
}

// Under sudo the mount is for the user behind sudo: it reads and writes the
// pod's files as its own, and any other local user is kept out (the kernel
// checks the modes the mount reports: default_permissions).
func TestMountUnderSudoKeepsOtherUsersOut(t *testing.T) {
	cs := clientset(t)
	pod := filesTarget(t, cs)
	dir := t.TempDir()
	if err := os.Chmod(filepath.Dir(dir), 0o755); err != nil { // t.TempDir's parent is 0700
		t.Fatal(err)
	}
	env := append(machine(t), "SUDO_UID=4242", "SUDO_GID=4242")
	p := startInLaptopNet(t, env, "kubectl-cz", "-n", demoNamespace, "mount", "pod", pod, dir, "--agent-pull-policy", "Never")
	p.waitFor("mounted after", 90*time.Second)
	defer func() {
		p.signal(syscall.SIGTERM)
		if err := p.wait(30 * time.Second); err != nil {
			t.Errorf("exit: %v\n%s", err, p.output())
		}
	}()
	as := func(uid string, args ...string) (string, error) {
		out, err := exec.Command("setpriv", append([]string{"--reuid", uid, "--regid", uid, "--clear-groups", "--"}, args...)...).CombinedOutput()
		return string(out), err
	}
	seed := filepath.Join(dir, "work", "seed.txt")
	if out, err := as("4242", "cat", seed); err != nil || out != "seed\n" {
		t.Fatalf("the user behind sudo cannot read the mount: %v %q", err, out)
	}
	if out, err := as("4242", "sh", "-c", "echo mine > "+filepath.Join(dir, "work", "by-user.txt")); err != nil {
		t.Fatalf("the user behind sudo cannot write: %v %s", err, out)
	}
	for _, path := range []string{seed, filepath.Join(dir, "etc", "app", "greeting"), dir} {
		if out, err := as("4343", "ls", "-l", path); err == nil {
			t.Errorf("another local user reads %s through the mount:\n%s", path, out)
		}
	}
}

// The kernel keeps what it read of an unchanged file (page cache across
// opens), and still sees what the pod changes: a same-size rewrite in the
// pod reads as the new bytes within two seconds, a file deleted in the pod
// disappears, and an unchanged file read again gives identical bytes.
func TestMountSeesPodChanges(t *testing.T) {
	cs := clientset(t)
	pod := filesTarget(t, cs)
	dir := t.TempDir()
	p := startInLaptopNet(t, machine(t), "kubectl-cz", "-n", demoNamespace, "mount", "pod", pod, dir, "--agent-pull-policy", "Never")
	p.waitFor("mounted after", 90*time.Second)
	inPod(t, pod, "sh", "-c", "head -c 4194304 /dev/urandom > /work/blob && touch -d '2020-01-01 00:00:00' /work/blob /work/seed.txt")
	blob, seed := filepath.Join(dir, "work", "blob"), filepath.Join(dir, "work", "seed.txt")
	if b, err := os.ReadFile(seed); err != nil || string(b) != "seed\n" {
		t.Fatalf("seed: %q %v", b, err)
	}
	first, err := os.ReadFile(blob)
	if err != nil || len(first) != 4<<20 {
		t.Fatalf("blob: %d bytes, %v", len(first), err)
	}
	time.Sleep(1200 * time.Millisecond) // past the attribute cache: a new lookup, the same file
	if again, err := os.ReadFile(blob); err != nil || !bytes.Equal(again, first) {
		t.Fatalf("the cached read of an unchanged file differs (%v)", err)
	}

	// A file that grows in the pod while open here reads on past the size
	// it had at open (tail -f of a log): the read stream's windows stop at
	// that size and SFTP reads the rest. A file not read before, so its
	// first open streams.
	inPod(t, pod, "sh", "-c", "head -c 3145728 /dev/urandom > /work/grows")
	wantGrows := inPod(t, pod, "sh", "-c", "md5sum < /work/grows")
	f, err := os.Open(filepath.Join(dir, "work", "grows"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(f)
	if err != nil || len(b) != 3<<20 || fmt.Sprintf("%x  -\n", md5.Sum(b)) != wantGrows {
		t.Fatalf("a 3 MiB file read once: %d bytes, %v", len(b), err)
	}
	inPod(t, pod, "sh", "-c", "printf 'appended in the pod' >> /work/grows")
	var more []byte
	waitUntil(t, 5*time.Second, func() bool {
		b, _ := io.ReadAll(f)
		more = append(more, b...)
		return string(more) == "appended in the pod"
	})
	f.Close()

	if b, err := os.ReadFile(seed); err != nil || string(b) != "seed\n" { // now from the kernel's pages
		t.Fatalf("seed: %q %v", b, err)
	}
	inPod(t, pod, "sh", "-c", "printf 'SEED\\n' > /work/seed.txt && rm /work/blob")
	changed := time.Now()
	waitUntil(t, 2*time.Second, func() bool {
		b, err := os.ReadFile(seed)
		return err == nil && string(b) == "SEED\n"
	})
	t.Logf("a change in the pod seen through the mount after %s", time.Since(changed).Round(10*time.Millisecond))
	waitUntil(t, 2*time.Second, func() bool {
		_, err := os.Stat(blob)
		return os.IsNotExist(err)
	})
	p.signal(syscall.SIGTERM)
	if err := p.wait(30 * time.Second); err != nil {
		t.Fatalf("exit: %v\n%s", err, p.output())
	}
}

// A write and its fsync reach the pod: the file server fsyncs the file
// there (fsync@openssh.com), and what was written is in the pod even when
// the plugin is killed right after.
func TestMountFsyncReachesThePod(t *testing.T) {
	cs := clientset(t)
	pod := filesTarget(t, cs)
	dir := t.TempDir()
	env := machine(t)
	p := startInLaptopNet(t, env, "kubectl-cz", "-n", demoNamespace, "mount", "pod", pod, dir, "--agent-pull-policy", "Never")
	id := strings.Fields(p.waitFor("session ", 30*time.Second))[1]
	p.waitFor("mounted after", 90*time.Second)
	// Past its first MiB (SFTP) a file's writes go on a write stream,
	// compressed where that pays: 3 MiB of text, then 1 MiB of random.
	want := bytes.Repeat([]byte("durable\n"), 3<<17)
	random := make([]byte, 1<<20)
	rand.Read(random)
	want = append(want, random...)
	f, err := os.Create(filepath.Join(dir, "work", "synced"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(want); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync through the mount: %v", err)
	}
	p.signal(syscall.SIGKILL)
	p.wait(10 * time.Second)
	f.Close()
	if got := strings.TrimSpace(inPod(t, pod, "sh", "-c", "md5sum < /work/synced")); !strings.HasPrefix(got, fmt.Sprintf("%x", md5.Sum(want))) {
		t.Errorf("the pod has %q of the synced file", got)
	}
	// The file server says what its write stream wrote once the stream
	// ends (here with the mount's death).
	running, err := cs.CoreV1().Pods(demoNamespace).Get(context.Background(), pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	server, _ := fileServer(t, running)
	streamed := regexp.MustCompile(`msg="write stream (closed|ended)" written=([0-9]+)`)
	var logs string
	var lerr error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && !streamed.MatchString(logs); time.Sleep(300 * time.Millisecond) {
		var raw []byte
		raw, lerr = cs.CoreV1().Pods(demoNamespace).GetLogs(pod, &corev1.PodLogOptions{Container: server}).Do(context.Background()).Raw()
		logs = string(raw)
	}
	if m := streamed.FindStringSubmatch(logs); m == nil {
		t.Errorf("no write stream in the log of file server %s (%v):\n%s", server, lerr, logs)
	} else if n, _ := strconv.Atoi(m[2]); n < 2<<20 {
		t.Errorf("the write stream wrote %d bytes of 4 MiB, want all past the first MiB:\n%s", n, logs)
	}
	// Closing the session takes the dead mount away, and the file server's
	// Secret in the cluster.
	c := startInLaptopNet(t, env, testPlugin(t), "-n", demoNamespace, "session", "close", id)
	if err := c.wait(60 * time.Second); err != nil || isMountpoint(dir) {
		t.Fatalf("the next command after a crash: %v mounted=%v\n%s", err, isMountpoint(dir), c.output())
	}
}

// Without root, mount goes through fusermount3 where the system lets a
// user open /dev/fuse; where it does not, the refusal is one line, before
// anything changes in the cluster.
func TestMountWithoutRoot(t *testing.T) {
	cs := clientset(t)
	pod := filesTarget(t, cs)
	before, err := cs.CoreV1().Pods(demoNamespace).Get(context.Background(), pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	u := nonRootUser(t)
	dir := filepath.Join(filepath.Dir(u.home), "mnt")
	os.Mkdir(dir, 0o755)
	os.Chown(dir, 4242, 4242)
	p := u.start(t, filepath.Join(repoRoot(t), "bin", "kubectl-cz"), "-n", demoNamespace, "mount", "pod", pod, dir, "--agent-pull-policy", "Never")
	st, err := os.Stat("/dev/fuse")
	if err != nil {
		t.Skip("no /dev/fuse")
	}
	if st.Mode().Perm()&0o006 == 0o006 { // users may open it: a real mount through fusermount3
		p.waitFor("mounted after", 90*time.Second)
		if b, err := os.ReadFile(filepath.Join(dir, "work", "seed.txt")); err != nil || string(b) != "seed\n" {
			t.Errorf("through fusermount3: %q %v", b, err)
		}
		p.signal(syscall.SIGTERM)
		if err := p.wait(30 * time.Second); err != nil || isMountpoint(dir) {
			t.Errorf("exit: %v mounted=%v\n%s", err, isMountpoint(dir), p.output())
		}
		return
	}
	if err := p.wait(30 * time.Second); err == nil {
		t.Fatalf("mounted without access to /dev/fuse:\n%s", p.output())
	}
	if out := strings.TrimSpace(p.output()); strings.Count(out, "\n") != 0 || !strings.Contains(out, "/dev/fuse") || !strings.Contains(out, "sudo -E") {
		t.Errorf("want one line naming /dev/fuse and sudo -E:\n%s", out)
	}
	after, err := cs.CoreV1().Pods(demoNamespace).Get(context.Background(), pod, metav1.GetOptions{})
	if err != nil || len(after.Spec.EphemeralContainers) != len(before.Spec.EphemeralContainers) {
		t.Errorf("the refusal changed the pod: %v", err)
	}
}

// Many readers at once (xargs -P 8 over 300 small files and two of 20 MiB,
// racing the folder fetch; the big ones read through read streams, in
// windows, the text one zstd-compressed: --compress) see exactly the bytes the pod has;
// so does a read of the big one's middle and end (tail -c: a seek, read by
// SFTP).
func TestMountManyReadersSeeConsistentData(t *testing.T) {
	cs := clientset(t)
	pod := filesTarget(t, cs)
	inPod(t, pod, "sh", "-c", `rm -rf /work/many && mkdir -p /work/many/a /work/many/b && for i in $(seq 1 150); do echo "file $i $(head -c 300 /dev/urandom | md5sum)" > /work/many/a/f$i; head -c $((i * 97)) /dev/urandom > /work/many/b/g$i; done && head -c 20971520 /dev/urandom > /work/many/big && seq 1 4000000 | head -c 20971520 > /work/many/log`)
	want := inPod(t, pod, "sh", "-c", "cd /work && find many -type f | sort | xargs md5sum")
	dir := t.TempDir()
	p := startInLaptopNet(t, machine(t), "kubectl-cz", "-n", demoNamespace, "mount", "pod", pod, dir, "--agent-pull-policy", "Never", "--compress")
	p.waitFor("mounted after", 90*time.Second)
	// The big file's end first, cold: a read that seeks.
	wantTail := inPod(t, pod, "sh", "-c", "tail -c 3000000 /work/many/big | md5sum")
	if out, err := exec.Command("sh", "-c", "tail -c 3000000 "+filepath.Join(dir, "work", "many", "big")+" | md5sum").CombinedOutput(); err != nil || string(out) != wantTail {
		t.Fatalf("tail -c of the big file: %v %s, want %s", err, out, wantTail)
	}
	for round := 0; round < 2; round++ { // cold, then from the kernel's pages
		cmd := exec.Command("sh", "-c", "cd "+filepath.Join(dir, "work")+" && find many -type f | sort | xargs -P 8 -n 10 md5sum | sort -k 2")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("md5sum through the mount: %v\n%s", err, out)
		}
		if sortLines(string(out)) != sortLines(want) {
			t.Fatalf("round %d: the mount's bytes differ from the pod's", round)
		}
	}
	// The text file came compressed, the random one as it is: the file
	// server logs each compressed range.
	running, err := cs.CoreV1().Pods(demoNamespace).Get(context.Background(), pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	server, _ := fileServer(t, running)
	raw, err := cs.CoreV1().Pods(demoNamespace).GetLogs(pod, &corev1.PodLogOptions{Container: server}).Do(context.Background()).Raw()
	if err != nil {
		t.Fatal(err)
	}
	var plain, sent int64
	for _, m := range regexp.MustCompile(`msg="read stream compressed" bytes=([0-9]+) sent=([0-9]+)`).FindAllStringSubmatch(string(raw), -1) {
		b, _ := strconv.ParseInt(m[1], 10, 64)
		z, _ := strconv.ParseInt(m[2], 10, 64)
		plain, sent = plain+b, sent+z
	}
	if plain < 16<<20 || sent > plain/2 {
		t.Errorf("the 20 MiB text file's read streams compressed %d bytes into %d, want most of it in under half:\n%s", plain, sent, raw)
	}
	// A file changed in the pod after the tree was fetched and read: a
	// cp -r a moment later copies the pod's new bytes, everything else
	// from the kernel's pages.
	inPod(t, pod, "sh", "-c", `echo "changed in the pod $(head -c 300 /dev/urandom | md5sum)" > /work/many/a/f7 && rm /work/many/b/g9`)
	want = inPod(t, pod, "sh", "-c", "cd /work && find many -type f | sort | xargs md5sum")
	time.Sleep(1500 * time.Millisecond)
	copied := filepath.Join(t.TempDir(), "many")
	if out, err := exec.Command("cp", "-r", filepath.Join(dir, "work", "many"), copied).CombinedOutput(); err != nil {
		t.Fatalf("cp -r through the mount: %v\n%s", err, out)
	}
	out, err := exec.Command("sh", "-c", "cd "+filepath.Dir(copied)+" && find many -type f | sort | xargs md5sum").CombinedOutput()
	if err != nil || sortLines(string(out)) != sortLines(want) {
		t.Fatalf("cp -r after a change in the pod: %v\ngot:\n%s\nwant:\n%s", err, out, want)
	}
	p.signal(syscall.SIGTERM)
	if err := p.wait(30 * time.Second); err != nil {
		t.Fatalf("exit: %v\n%s", err, p.output())
	}
}

func sortLines(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}
