// Package localrun runs a local process as a part of an environment: the
// developer's build of a Service, started once the rest of the environment
// is active (so the cluster's names resolve and its volumes are mounted),
// with a workload's environment, and stopped first.
package localrun

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-cz/kubectl-cz/containerenv"
	"github.com/kubectl-cz/kubectl-cz/lifecycle"
	"github.com/kubectl-cz/kubectl-cz/netstack/localnet"
	"github.com/kubectl-cz/kubectl-cz/session"
	"github.com/kubectl-cz/kubectl-cz/workload"
)

// KindProcess records a local process of an environment, for session show
// and graph. Its undo has nothing to do: the process dies with kubectl cz
// (Pdeathsig), so none outlives a crash.
const KindProcess = "run.process"

type processData struct {
	Name    string   `json:"name"`
	Command []string `json:"command"`
	// Service is the Service the process stands in for (its intercept's),
	// Namespace where it is.
	Service   string `json:"service,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	EnvFrom   string `json:"envFrom,omitempty"`
	PID       int    `json:"pid,omitempty"`
}

func init() {
	session.RegisterKind(session.Kind{Name: KindProcess, Local: true,
		Check: func(e session.Entry) error {
			var d processData
			if err := json.Unmarshal(e.Data, &d); err != nil || d.Name == "" || len(d.Command) == 0 {
				return fmt.Errorf("a local process entry without a name or a command")
			}
			return nil
		},
		Undo: func(context.Context, *session.UndoContext, session.Entry) error { return nil },
		Describe: func(e session.Entry) session.Alteration {
			var d processData
			_ = json.Unmarshal(e.Data, &d)
			text := fmt.Sprintf("runs %s here (%s)", d.Name, strings.Join(d.Command, " "))
			if d.EnvFrom != "" {
				text += " with the environment of " + d.EnvFrom
			}
			a := session.Alteration{Text: text, Service: d.Service, Workload: d.EnvFrom, Role: "local", Short: "run " + d.Name + ": " + strings.Join(d.Command, " ")}
			if d.Namespace != "" {
				a.Namespaces = []string{d.Namespace}
			}
			if d.Service != "" {
				a.Role = "standin"
			}
			return a
		}})
}

// stopGrace is how long a process gets between SIGTERM and SIGKILL.
const stopGrace = 10 * time.Second

// Part runs one command.
type Part struct {
	// Label names the process in progress and in front of its output.
	Label   string
	Command []string
	Dir     string
	// EnvFrom, if set, gives the process that workload's environment
	// (container Container), under Env and over this process's own.
	EnvFrom   *workload.Ref
	Container string
	Env       map[string]string
	// Ready, if set, is a TCP address the process listens on once it is
	// ready; the part is active when it accepts a connection. Else the
	// part is active once the process started.
	Ready string
	// StandsFor is the Service whose intercepted requests this process
	// answers, if any (for session show and graph).
	StandsFor string
	Kube      kubernetes.Interface
	Namespace string
	Out       io.Writer
	ErrOut    io.Writer
}

func (p *Part) Name() string { return "run " + p.Label }

// Needs: reading the workload whose environment the process gets.
func (p *Part) Needs() []lifecycle.Right {
	if p.EnvFrom == nil {
		return nil
	}
	return (&workload.EnvFile{Namespace: p.Namespace, Workload: *p.EnvFrom}).Needs()
}

// Prepare finds the program, so a typo fails before anything changes.
func (p *Part) Prepare(ctx context.Context) error {
	if len(p.Command) == 0 {
		return errors.New("no command")
	}
	if _, err := exec.LookPath(p.Command[0]); err != nil {
		return fmt.Errorf("command %q: %w", p.Command[0], err)
	}
	if p.EnvFrom != nil {
		return (&workload.EnvFile{Kube: p.Kube, Namespace: p.Namespace, Workload: *p.EnvFrom, Container: p.Container, Format: "json"}).Prepare(ctx)
	}
	return nil
}

// Plan says what would run.
func (p *Part) Plan() []string {
	what := "run " + strings.Join(p.Command, " ")
	if p.EnvFrom != nil {
		what += " with the environment of " + p.EnvFrom.String()
	}
	if p.Ready != "" {
		what += ", ready when " + p.Ready + " accepts"
	}
	return []string{what}
}

func (p *Part) environ(ctx context.Context) ([]string, error) {
	return Environment(ctx, p.Kube, p.Namespace, p.EnvFrom, p.Container, p.Env, p.ErrOut)
}

// Environment is this process's environment, over it the environment of
// workload envFrom's container (if any), over both env.
func Environment(ctx context.Context, kube kubernetes.Interface, namespace string, envFrom *workload.Ref, container string, extra map[string]string, errOut io.Writer) ([]string, error) {
	env := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	if envFrom != nil {
		src, err := workload.Lookup(ctx, kube, namespace, *envFrom)
		if err != nil {
			return nil, err
		}
		if src.Container, err = workload.PickContainer(errOut, src, container); err != nil {
			return nil, err
		}
		res, err := containerenv.Resolve(ctx, kube, src)
		if err != nil {
			return nil, err
		}
		for _, w := range res.Warnings {
			fmt.Fprintln(errOut, "warning: "+w)
		}
		for _, v := range res.Vars {
			env[v.Name] = v.Value
		}
	}
	for k, v := range extra {
		env[k] = v
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out, nil
}

// Run starts the command and holds it until ctx ends (then SIGTERM, and
// SIGKILL after stopGrace). The process ending by itself ends the part,
// and so the environment.
func (p *Part) Run(ctx context.Context, s *session.Session, active func()) error {
	env, err := p.environ(ctx)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.Command[0], p.Command[1:]...)
	cmd.Dir, cmd.Env = p.Dir, env
	// Its own process group, so a stop reaches its children; killed with
	// this process, so a kill -9 of kubectl cz leaves no orphan serving.
	cmd.SysProcAttr = procAttr()
	if u := localnet.InvokingUser(); u != nil {
		// Under sudo: the developer's process, not root's.
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(u.UID), Gid: uint32(u.GID)}
	}
	var copying sync.WaitGroup
	for _, s := range []struct {
		pipe func() (io.ReadCloser, error)
		to   io.Writer
	}{{cmd.StdoutPipe, p.Out}, {cmd.StderrPipe, p.ErrOut}} {
		r, err := s.pipe()
		if err != nil {
			return err
		}
		copying.Add(1)
		go func() {
			defer copying.Done()
			prefixLines(r, s.to, "["+p.Label+"] ")
		}()
	}
	d := processData{Name: p.Label, Command: p.Command, Service: p.StandsFor, Namespace: p.Namespace}
	if p.EnvFrom != nil {
		d.EnvFrom = p.EnvFrom.String()
	}
	e, err := s.Record(ctx, KindProcess, "run", "", d)
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		_ = s.Discard(ctx, e)
		return fmt.Errorf("start %s: %w", p.Command[0], err)
	}
	d.PID = cmd.Process.Pid
	if _, err := s.Applied(ctx, e, d); err != nil {
		stopNow(cmd)
		return err
	}
	exited := make(chan error, 1)
	go func() {
		copying.Wait()
		exited <- cmd.Wait()
	}()
	if err := p.waitReady(ctx, exited); err != nil {
		stop(cmd, exited)
		return err
	}
	active()
	select {
	case err := <-exited:
		if err == nil {
			return fmt.Errorf("%s exited", p.Command[0])
		}
		return fmt.Errorf("%s: %w", p.Command[0], err)
	case <-ctx.Done():
		stop(cmd, exited)
		return nil
	}
}

// waitReady waits for the Ready address to accept, or for the process to
// end first (then with its error).
func (p *Part) waitReady(ctx context.Context, exited chan error) error {
	if p.Ready == "" {
		return nil
	}
	var ended error
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		select {
		case err := <-exited:
			exited <- err
			ended = fmt.Errorf("%s ended before %s accepted a connection: %v", p.Command[0], p.Ready, err)
			return false, ended
		default:
		}
		d := net.Dialer{Timeout: time.Second}
		c, err := d.DialContext(ctx, "tcp", p.Ready)
		if err != nil {
			return false, nil
		}
		c.Close()
		return true, nil
	})
	if ended != nil {
		return ended
	}
	return err
}

// stop ends the process group: SIGTERM, then SIGKILL after stopGrace.
func stop(cmd *exec.Cmd, exited chan error) {
	pgid := -cmd.Process.Pid
	_ = syscall.Kill(pgid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(stopGrace):
		_ = syscall.Kill(pgid, syscall.SIGKILL)
		<-exited
	}
}

// stopNow kills the process group at once.
func stopNow(cmd *exec.Cmd) {
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	_ = cmd.Wait()
}

func prefixLines(r io.Reader, w io.Writer, prefix string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fmt.Fprintf(w, "%s%s\n", prefix, sc.Text())
	}
	_, _ = io.Copy(io.Discard, r)
}
