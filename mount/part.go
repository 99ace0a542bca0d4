package mount

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"

	"github.com/kubectl-cz/kubectl-cz/fusefs"
	"github.com/kubectl-cz/kubectl-cz/lifecycle"
	"github.com/kubectl-cz/kubectl-cz/session"
	"github.com/kubectl-cz/kubectl-cz/workload"
)

// Part is a mount of a workload's volumes, as a part of an environment.
type Part struct {
	Clients   session.Clients
	Namespace string
	Workload  workload.Ref
	Container string // empty: the default container
	Dir       string
	ReadOnly  bool
	// Compress asks for read streams zstd-compressed (Streams.Compress).
	Compress bool
	Image    string
	Pull     corev1.PullPolicy
	Out      io.Writer
	ErrOut   io.Writer
	// Start is when the command started, for the time to active.
	Start time.Time

	pod    *corev1.Pod
	mounts []corev1.VolumeMount
}

func (p *Part) Name() string { return "mount " + p.Workload.String() + " " + p.Dir }

// Needs: the ephemeral container, its Secret, the tunnel, the journal.
func (p *Part) Needs() []lifecycle.Right {
	return lifecycle.Rights(primitive, p.Namespace, append(lifecycle.JournalRights,
		[3]string{"update", "", "pods/ephemeralcontainers"}, lifecycle.TunnelRight,
		[3]string{"create", "", "secrets"}, [3]string{"get", "", "secrets"}, [3]string{"delete", "", "secrets"})...)
}

// Prepare picks the pod and container and the volumes to show.
func (p *Part) Prepare(ctx context.Context) error {
	dir, err := filepath.Abs(p.Dir)
	if err != nil {
		return err
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return fmt.Errorf("%s is not a folder: create it first", p.Dir)
	}
	p.Dir = dir
	if err := canMount(); err != nil {
		return err
	}
	src, err := workload.Lookup(ctx, p.Clients.Kube, p.Namespace, p.Workload)
	if err != nil {
		return err
	}
	if src.Pod == nil {
		return fmt.Errorf("%s has no running pod to mount", p.Workload)
	}
	if p.Container, err = workload.PickContainer(p.ErrOut, src, p.Container); err != nil {
		return err
	}
	p.pod = src.Pod
	p.mounts, err = Paths(src.Pod, p.Container)
	return err
}

// Admit dry-runs the file server's ephemeral container.
func (p *Part) Admit(ctx context.Context) error {
	return DryRun(ctx, p.Clients.Kube, Spec{Pod: p.pod, Container: p.Container, ReadOnly: p.ReadOnly, Image: p.Image, Pull: p.Pull})
}

// Plan says what the mount would change.
func (p *Part) Plan() []string {
	return []string{
		fmt.Sprintf("create a Secret in %s named like the file server (its secret), unless one already runs with these volumes", p.Namespace),
		fmt.Sprintf("add ephemeral container %s... to pod %s/%s (it stays, stopped, until the pod is replaced)", agentPrefix, p.Namespace, p.pod.Name),
		fmt.Sprintf("mount the volumes of container %s at %s (%s)", p.Container, p.Dir, strings.Join(p.paths(), ", ")),
	}
}

func (p *Part) paths() []string {
	var paths []string
	for _, m := range p.mounts {
		paths = append(paths, filepath.Join(p.Dir, m.MountPath))
	}
	return paths
}

// Run adds the file server and mounts until ctx ends.
func (p *Part) Run(ctx context.Context, s *session.Session, active func()) error {
	if p.pod == nil {
		if err := p.Prepare(ctx); err != nil {
			return err
		}
	}
	spec := Spec{Pod: p.pod, Container: p.Container, Dir: p.Dir, ReadOnly: p.ReadOnly, Image: p.Image, Pull: p.Pull}
	agent, err := AddAgent(ctx, s, p.Clients.Kube, spec, p.Out)
	if err != nil {
		return err
	}
	remote, err := NewRedialer(func() (*sftp.Client, func(), error) {
		return Connect(ctx, p.Clients.Rest, p.Clients.Kube, p.Namespace, p.pod.Name, agent)
	})
	if err != nil {
		return err
	}
	defer remote.Close()
	streams := &Streams{Rest: p.Clients.Rest, Kube: p.Clients.Kube, NS: p.Namespace, Pod: p.pod.Name, Agent: agent, Compress: p.Compress}
	defer streams.Close()
	remote.Trees, remote.Reads, remote.Writes = streams.Tree, streams.Read, streams.Writes
	var roots []string
	for _, m := range p.mounts {
		roots = append(roots, m.MountPath)
	}
	return Serve(ctx, s, remote, p.mounts, p.Dir, p.ReadOnly, LocalOwner(p.pod, p.Container), func() {
		fmt.Fprintf(p.Out, "mounted after %.1fs: pod %s container %s at %s\n", time.Since(p.Start).Seconds(), p.pod.Name, p.Container, strings.Join(p.paths(), ", "))
		active()
	}, func(ctx context.Context, m *fusefs.Mounted) {
		Watch(ctx, p.Clients.Rest, p.Clients.Kube, p.Namespace, p.pod.Name, agent, roots, m, p.ErrOut)
	})
}

// canMount says in one line why this process cannot mount, before
// anything changes: root mounts directly; another user needs fusermount3
// and a /dev/fuse it may open.
func canMount() error {
	if runtime.GOOS != "linux" {
		return fmt.Errorf("mount needs Linux FUSE, which %s does not have: read the pod's files with kubectl cp or kubectl exec", runtime.GOOS)
	}
	if os.Geteuid() == 0 {
		return nil
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		return fmt.Errorf("mounting without root needs fusermount3 (package fuse3), which is not on PATH: install it, or run with sudo -E")
	}
	if err := unix.Access("/dev/fuse", unix.R_OK|unix.W_OK); err != nil {
		return fmt.Errorf("mounting without root needs read and write access to /dev/fuse, which this system gives only to root: run with sudo -E")
	}
	return nil
}
