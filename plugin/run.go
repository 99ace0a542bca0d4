package plugin

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"sync/atomic"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-cz/kubectl-cz/agent/wire"
	"github.com/kubectl-cz/kubectl-cz/intercept"
	"github.com/kubectl-cz/kubectl-cz/lifecycle"
	"github.com/kubectl-cz/kubectl-cz/localrun"
	"github.com/kubectl-cz/kubectl-cz/netstack/sandbox"
	"github.com/kubectl-cz/kubectl-cz/netstack/teleport"
	"github.com/kubectl-cz/kubectl-cz/session"
	"github.com/kubectl-cz/kubectl-cz/workload"
)

type runOptions struct {
	flags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams

	command    []string
	namespaces []string
	exclude    []string
	domain     string
	envFrom    string
	container  string
	sessionID  string
	quiet      bool

	// An intercept whose traffic the command receives.
	intercept  string
	localPort  int
	remotePort string
	rule       ruleFlags
	match      wire.Match
	agentImage string
	pullPolicy string
}

// NewRunCommand returns `kubectl cz run`.
func NewRunCommand(flags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &runOptions{flags: flags, IOStreams: streams}
	cmd := &cobra.Command{
		Use:   "run [--env-from KIND/NAME] [-- ]COMMAND [ARG ...]",
		Short: "Run one command teleported: the cluster's Services answer by name for it alone, no root needed",
		Long: `Run COMMAND in a network and mount namespace of its own, in which every Service of the
namespace answers at its cluster names and ports through port-forward tunnels (as with
kubectl cz teleport), for COMMAND and its children alone. Nothing on this machine changes: no
address, no resolver file, no hosts line, so nothing needs putting back, even after a crash.
When not root, a user namespace makes it work without privileges (the kernel must allow
unprivileged user namespaces; the error says which setting when it does not).

COMMAND's standard streams are this terminal's; signals pass through (the terminal's Ctrl-C
reaches it directly), and kubectl cz run exits with its exit code. COMMAND and every process
it starts end with kubectl cz run, also when it is killed.

In that network only the cluster's Services answer: this machine's own services (a database on
localhost) and the internet do not. Names outside the cluster still resolve.`,
		Example: `  # One request to a Service of the current namespace, by its cluster name
  kubectl cz run -- curl http://frontend/

  # A local build of core with core's environment, reaching leaf and db in the cluster
  kubectl cz run -n shop --env-from deployment/core -- go run ./cmd/core

  # A shell in which the namespaces' Services answer
  kubectl cz run --namespaces shop,payments -- bash

  # A local core that also receives core's requests carrying x-cz-intercept: alice
  kubectl cz run --env-from deployment/core --intercept core --local-port 3000 \
    --header x-cz-intercept=alice -- go run ./cmd/core`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			o.command = args
			if o.envFrom != "" {
				if _, err := workload.Parse(o.envFrom); err != nil {
					return usageError(c, "--env-from: %v", err)
				}
			}
			if o.sessionID != "" {
				if err := session.ValidateID(o.sessionID); err != nil {
					return err
				}
			}
			if err := o.completeIntercept(c); err != nil {
				return err
			}
			return o.run(c.Context())
		},
	}
	// Flags after COMMAND are COMMAND's (kubectl cz run curl -s http://x/).
	cmd.Flags().SetInterspersed(false)
	f := cmd.Flags()
	f.StringSliceVar(&o.namespaces, "namespaces", nil, "Namespaces whose Services answer (default: the current one); bare names are those of the first")
	f.StringSliceVar(&o.exclude, "exclude", nil, "Services to leave out, as NAME or NAMESPACE/NAME (repeatable)")
	f.StringVar(&o.domain, "cluster-domain", "", "The cluster's DNS domain (default: read from kube-system's coredns ConfigMap where you may, else cluster.local)")
	f.StringVar(&o.envFrom, "env-from", "", "Give COMMAND the environment of this workload's container (deployment/NAME, statefulset/NAME, pod/NAME)")
	f.StringVarP(&o.container, "container", "c", "", "With --env-from: the container (default: the workload's default container)")
	f.StringVar(&o.sessionID, "session", "", "Session to record the run in (default: a new one)")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "Say nothing but errors: COMMAND's output alone")
	f.StringVar(&o.intercept, "intercept", "", "Also intercept this Service: its requests with your header (or all, --all) reach COMMAND on --local-port, inside its network")
	f.IntVar(&o.localPort, "local-port", 0, "With --intercept: the port COMMAND listens on (on 127.0.0.1 in its network)")
	f.StringVar(&o.remotePort, "remote-port", "", "With --intercept: the Service port, by number or name (needed when it has several)")
	o.rule.add(f, "With --intercept: ")
	f.StringVar(&o.agentImage, "agent-image", DefaultAgentImage(), "With --intercept: image of the in-cluster agent")
	f.StringVar(&o.pullPolicy, "agent-pull-policy", string(corev1.PullIfNotPresent), "With --intercept: pull policy of the agent image: IfNotPresent, Always or Never")
	return cmd
}

// completeIntercept checks the intercept flags, which go together.
func (o *runOptions) completeIntercept(c *cobra.Command) error {
	if o.intercept == "" {
		if o.localPort != 0 || o.rule.given() || o.remotePort != "" {
			return usageError(c, "--local-port, --remote-port and the rule's flags (--header, --path, --method, --all, ...) go with --intercept SERVICE")
		}
		return nil
	}
	if o.localPort < 1 || o.localPort > 65535 {
		return usageError(c, "--intercept needs --local-port, the port COMMAND listens on (1-65535)")
	}
	if err := checkPullPolicy(o.pullPolicy); err != nil {
		return usageError(c, "%v", err)
	}
	m, err := o.rule.match()
	if err != nil {
		return usageError(c, "%v", err)
	}
	o.match = m
	return nil
}

func (o *runOptions) run(ctx context.Context) error {
	if err := sandbox.Supported(); err != nil {
		return err
	}
	a, err := resolveAccess(o.flags)
	if err != nil {
		return err
	}
	namespaces := o.namespaces
	if len(namespaces) == 0 {
		namespaces = []string{a.Namespace}
	}
	sb, err := sandbox.Start()
	if err != nil {
		return err
	}
	defer sb.Close()

	// Until the command runs, a signal stops the whole run; from then on
	// it is the command's, whose end ends the run.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var interrupted atomic.Bool
	sb.RelaySignals(func(os.Signal) {
		interrupted.Store(true)
		cancel()
	})

	var log io.Writer = o.ErrOut
	if o.quiet {
		log = io.Discard
	}
	parts := []lifecycle.Part{
		newTeleportPart(a, log, teleport.Config{Namespaces: namespaces, Exclude: o.exclude, Domain: o.domain, Sandbox: sb}),
	}
	if o.intercept != "" {
		// The agent's streams reach the command inside its network; it
		// starts after the intercept, so nothing listening yet is expected.
		p := &intercept.Part{Service: o.intercept, Port: o.remotePort, All: o.rule.all, Mirror: o.rule.mirror, Match: o.match,
			LocalAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(o.localPort)), DialLocal: sb.Dial, LocalStartsLater: true,
			Agent: intercept.AgentSpec{Image: o.agentImage, PullPolicy: corev1.PullPolicy(o.pullPolicy)},
			OpenShared: func(ctx context.Context, id string) (*session.Session, error) {
				return openSession(ctx, a, o.flags, id, session.Config{})
			},
		}
		parts = append(parts, newInterceptPart(a, whoAmI(ctx, a, o.flags), genericiooptions.IOStreams{In: o.In, Out: log, ErrOut: o.ErrOut}, p))
	}
	cmd := &localrun.Sandboxed{Sandbox: sb, Command: o.command, Container: o.container, Kube: a.Kube, Namespace: a.Namespace, ErrOut: o.ErrOut}
	if o.envFrom != "" {
		ref, _ := workload.Parse(o.envFrom)
		cmd.EnvFrom = &ref
	}
	parts = append(parts, cmd)
	hint := ": nothing on this machine needs putting back"
	if o.intercept != "" {
		hint = ": nothing on this machine needs putting back; the intercept's session " + intercept.SessionID(a.Namespace, o.intercept) + " closes from any machine"
	}
	cfg := lifecycleConfig(a, o.flags, o.sessionID, genericiooptions.IOStreams{In: o.In, Out: log, ErrOut: o.ErrOut}, hint)
	cfg.NoSignals = true
	err = lifecycle.Run(ctx, cfg, parts...)
	if err == nil && interrupted.Load() {
		return errors.New("interrupted before the command started")
	}
	return err
}
