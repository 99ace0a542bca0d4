package localrun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"syscall"

	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-cz/kubectl-cz/lifecycle"
	"github.com/kubectl-cz/kubectl-cz/netstack/sandbox"
	"github.com/kubectl-cz/kubectl-cz/session"
	"github.com/kubectl-cz/kubectl-cz/workload"
)

// Sandboxed is kubectl cz run's command, run in a sandbox (its own
// network, where teleport put the cluster's Services) with the terminal:
// its standard streams are this process's, its signals pass through, and
// its end ends the environment with its exit code (sandbox.ErrExit).
type Sandboxed struct {
	Sandbox *sandbox.Sandbox
	Command []string
	Dir     string
	// EnvFrom, if set, gives the command that workload's environment.
	EnvFrom   *workload.Ref
	Container string
	Kube      kubernetes.Interface
	Namespace string
	ErrOut    io.Writer
}

func (p *Sandboxed) Name() string { return "run " + p.Command[0] }

// Needs: reading the workload whose environment the command gets.
func (p *Sandboxed) Needs() []lifecycle.Right {
	if p.EnvFrom == nil {
		return nil
	}
	return (&workload.EnvFile{Namespace: p.Namespace, Workload: *p.EnvFrom}).Needs()
}

// Prepare finds the program, so a typo fails before anything starts.
func (p *Sandboxed) Prepare(ctx context.Context) error {
	if _, err := exec.LookPath(p.Command[0]); err != nil {
		return fmt.Errorf("command %q: %w", p.Command[0], err)
	}
	if p.EnvFrom != nil {
		return (&workload.EnvFile{Kube: p.Kube, Namespace: p.Namespace, Workload: *p.EnvFrom, Container: p.Container, Format: "json"}).Prepare(ctx)
	}
	return nil
}

// Plan says what would run.
func (p *Sandboxed) Plan() []string {
	what := "run " + strings.Join(p.Command, " ") + " in a network and mount namespace of its own"
	if p.EnvFrom != nil {
		what += ", with the environment of " + p.EnvFrom.String()
	}
	return []string{what}
}

// Run starts the command and returns its exit code once it ends; when the
// environment stops first, the command gets SIGTERM, and SIGKILL after
// stopGrace.
func (p *Sandboxed) Run(ctx context.Context, s *session.Session, active func()) error {
	env, err := Environment(ctx, p.Kube, p.Namespace, p.EnvFrom, p.Container, nil, p.ErrOut)
	if err != nil {
		return err
	}
	d := processData{Name: p.Command[0], Command: p.Command, Namespace: p.Namespace}
	if p.EnvFrom != nil {
		d.EnvFrom = p.EnvFrom.String()
	}
	e, err := s.Record(ctx, KindProcess, "run", "", d)
	if err != nil {
		return err
	}
	if ctx.Err() != nil { // stopped while the journal noted it: no command
		_ = s.Discard(context.Background(), e)
		return nil
	}
	if err := p.Sandbox.Run(p.Command, env, p.Dir); err != nil {
		_ = s.Discard(ctx, e)
		return err
	}
	if _, err := s.Applied(ctx, e, d); err != nil {
		_ = p.Sandbox.Close()
		return err
	}
	active()
	select {
	case <-p.Sandbox.Done():
		code, err := p.Sandbox.Wait(context.Background())
		if err != nil {
			return err
		}
		return &sandbox.ErrExit{Code: code}
	case <-ctx.Done():
		_ = p.Sandbox.Signal(syscall.SIGTERM)
		wctx, cancel := context.WithTimeout(context.Background(), stopGrace)
		defer cancel()
		if _, err := p.Sandbox.Wait(wctx); errors.Is(err, context.DeadlineExceeded) {
			_ = p.Sandbox.Close()
		}
		return nil
	}
}
