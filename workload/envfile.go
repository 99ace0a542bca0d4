package workload

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"

	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-cz/kubectl-cz/containerenv"
	"github.com/kubectl-cz/kubectl-cz/lifecycle"
	"github.com/kubectl-cz/kubectl-cz/netstack/localnet"
	"github.com/kubectl-cz/kubectl-cz/session"
)

// EnvFile is the part of an environment that writes a workload's
// environment to a file on this machine (0600, the invoking user's), journaled
// so it is removed when the environment ends or after a crash.
type EnvFile struct {
	Kube      kubernetes.Interface
	Namespace string
	Workload  Ref
	Container string // empty: the default container
	Path      string
	Format    string
	Out       io.Writer
	ErrOut    io.Writer
}

func (p *EnvFile) Name() string { return "env " + p.Workload.String() + " > " + p.Path }

// Needs: reading the workload and its pods (the ConfigMaps and Secrets it
// references are said as warnings when they cannot be read).
func (p *EnvFile) Needs() []lifecycle.Right {
	group, resource := "apps", p.Workload.Kind+"s"
	if p.Workload.Kind == "pod" {
		group = ""
	}
	return lifecycle.Rights("env", p.Namespace, [3]string{"get", group, resource}, [3]string{"list", "", "pods"})
}

// Prepare checks the workload, the container and the format.
func (p *EnvFile) Prepare(ctx context.Context) error {
	if !containerenv.ValidFormat(p.Format) {
		return fmt.Errorf("env format %q: want one of %s", p.Format, strings.Join(containerenv.Formats, ", "))
	}
	src, err := Lookup(ctx, p.Kube, p.Namespace, p.Workload)
	if err != nil {
		return err
	}
	_, err = PickContainer(io.Discard, src, p.Container)
	return err
}

// Plan says which file would be written.
func (p *EnvFile) Plan() []string {
	return []string{fmt.Sprintf("write the environment of %s to %s (%s, mode 0600), removed at the end", p.Workload, p.Path, p.Format)}
}

// Run writes the file and holds it until ctx ends; the session's undo
// removes it (or puts back what was there).
func (p *EnvFile) Run(ctx context.Context, s *session.Session, active func()) error {
	src, err := Lookup(ctx, p.Kube, p.Namespace, p.Workload)
	if err != nil {
		return err
	}
	if src.Container, err = PickContainer(p.ErrOut, src, p.Container); err != nil {
		return err
	}
	var buf bytes.Buffer
	n, err := containerenv.Render(ctx, p.Kube, src, p.Format, &buf, p.ErrOut)
	if err != nil {
		return err
	}
	if err := localnet.WriteFile(ctx, s, p.Path, buf.Bytes(), 0o600); err != nil {
		return err
	}
	fmt.Fprintf(p.Out, "environment of %s (container %s, %d variables) written to %s; removed when this ends\n", p.Workload, src.Container, n, p.Path)
	active()
	<-ctx.Done()
	return nil
}
