package plugin

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-cz/kubectl-cz/environment"
	"github.com/kubectl-cz/kubectl-cz/intercept"
	"github.com/kubectl-cz/kubectl-cz/lifecycle"
	"github.com/kubectl-cz/kubectl-cz/localrun"
	"github.com/kubectl-cz/kubectl-cz/mount"
	"github.com/kubectl-cz/kubectl-cz/netstack/teleport"
	"github.com/kubectl-cz/kubectl-cz/session"
	"github.com/kubectl-cz/kubectl-cz/workload"
)

type upOptions struct {
	flags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams

	file       string
	dryRun     bool
	sessionID  string
	agentImage string
	pullPolicy string
}

// NewUpCommand returns `kubectl cz up`.
func NewUpCommand(flags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &upOptions{flags: flags, IOStreams: streams}
	cmd := &cobra.Command{
		Use:   "up [-f cz.yaml] [--dry-run]",
		Short: "Start a whole environment from one file: teleport, env files, mounts, intercepts, local processes",
		Long: `Start the environment an environment file describes, in one process and one session: a
teleport of namespaces, env files of workloads, mounts of their volumes, intercepts of Services
and the local processes that stand in for them. Parts start in that order, each once the one
before is active (its data path proven), with one progress line per part; Ctrl-C or SIGTERM
stops them in reverse order and puts everything back. A part that fails undoes what was done
and is named in the error.

The file is read strictly: an unknown field or a bad value is refused with its line, before
anything changes. Values may use the environment: ${USER}, ${PORT:-3000}; $$ is a dollar sign.
Relative paths are relative to the file's folder.

--dry-run prints what each part would change and checks, through the API server, every right
the parts need, changing nothing.

  apiVersion: kubectl-cz.dev/v1alpha1
  kind: Environment
  metadata: {name: core-feature}
  spec:
    namespace: shop                    # default: -n, else the context's
    teleport: {dns: auto, exclude: []} # the namespace's Services answer here
    env:                               # a workload's environment in a file
    - {workload: deployment/core, file: core.env, format: env}
    mounts:                            # a workload's volumes in a folder
    - {workload: deployment/core, dir: ./core-volumes, readOnly: false}
    intercepts:                        # requests with the header reach localPort
    - {service: core, localPort: 3000, header: "x-cz-intercept=${USER}"}
    run:                               # started last, stopped first
    - name: core
      command: [go, run, ./cmd/core]
      envFrom: deployment/core         # the workload's environment
      env: {LISTEN: "127.0.0.1:3000"}
      ready: 127.0.0.1:3000            # active once this accepts

Teleport and mount change this machine: then run it as root (sudo -E); local processes run as
the user behind sudo.`,
		Example: `  # The environment of ./cz.yaml
  sudo -E kubectl cz up

  # Check another file and the rights it needs, changing nothing
  kubectl cz up -f envs/checkout.yaml --dry-run`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := checkPullPolicy(o.pullPolicy); err != nil {
				return usageError(c, "%v", err)
			}
			if o.sessionID != "" {
				if err := session.ValidateID(o.sessionID); err != nil {
					return err
				}
			}
			return o.run(c.Context())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.file, "filename", "f", "cz.yaml", "The environment file")
	f.BoolVar(&o.dryRun, "dry-run", false, "Print what would change and check the rights it needs; change nothing")
	f.StringVar(&o.sessionID, "session", "", "Session to record the environment in (default: a new one)")
	f.StringVar(&o.agentImage, "agent-image", DefaultAgentImage(), "Image of the in-cluster agents")
	f.StringVar(&o.pullPolicy, "agent-pull-policy", string(corev1.PullIfNotPresent), "Pull policy of the agent image: IfNotPresent, Always or Never")
	_ = cmd.MarkFlagFilename("filename", "yaml", "yml")
	return cmd
}

func (o *upOptions) run(ctx context.Context) error {
	file, err := environment.Read(o.file, nil)
	if err != nil {
		return err
	}
	a, err := resolveAccess(o.flags)
	if err != nil {
		return err
	}
	ns := a.Namespace
	if file.Spec.Namespace != "" {
		if o.flags.Namespace != nil && *o.flags.Namespace != "" && *o.flags.Namespace != file.Spec.Namespace {
			return fmt.Errorf("%s names namespace %s, but -n says %s: drop one", o.file, file.Spec.Namespace, *o.flags.Namespace)
		}
		ns = file.Spec.Namespace
	}
	user := whoAmI(ctx, a, o.flags)
	parts := o.parts(a, ns, user, file)
	name := file.Metadata.Name
	if name == "" {
		name = o.file
	}
	if o.dryRun {
		fmt.Fprintf(o.Out, "environment %s: %d parts in namespace %s (dry run: nothing changes)\n", name, len(parts), ns)
		return lifecycle.DryRun(ctx, a.Kube, o.Out, parts)
	}
	fmt.Fprintf(o.Out, "environment %s: %d parts in namespace %s\n", name, len(parts), ns)
	cfg := lifecycleConfig(a, o.flags, o.sessionID, o.IOStreams, ": kubectl cz session close %[1]s, from any machine; this machine's changes are undone by its next kubectl cz command")
	cfg.Progress = o.Out
	start := time.Now()
	cfg.Active = func() {
		fmt.Fprintf(o.Out, "environment %s active after %.1fs (Ctrl-C to stop it and put everything back)\n", name, time.Since(start).Seconds())
	}
	return lifecycle.Run(ctx, cfg, parts...)
}

// parts turns the file into the environment's parts, in start order.
func (o *upOptions) parts(a *clusterAccess, ns, user string, f *environment.File) []lifecycle.Part {
	var parts []lifecycle.Part
	s := &f.Spec
	if t := s.Teleport; t != nil {
		namespaces := t.Namespaces
		if len(namespaces) == 0 {
			namespaces = []string{ns}
		}
		parts = append(parts, newTeleportPart(a, o.Out, teleport.Config{Namespaces: namespaces, Exclude: t.Exclude, DNS: t.DNS, Domain: t.ClusterDomain}))
	}
	for _, e := range s.Env {
		ref, _ := workload.Parse(e.Workload) // checked when the file was read
		parts = append(parts, &workload.EnvFile{Kube: a.Kube, Namespace: ns, Workload: ref, Container: e.Container, Path: f.Path(e.File), Format: e.Format, Out: o.Out, ErrOut: o.ErrOut})
	}
	for _, m := range s.Mounts {
		ref, _ := workload.Parse(m.Workload)
		parts = append(parts, newMountPart(a, o.IOStreams, &mount.Part{Namespace: ns, Workload: ref, Container: m.Container, Dir: f.Path(m.Dir), ReadOnly: m.ReadOnly, Compress: m.Compress,
			Image: o.agentImage, Pull: corev1.PullPolicy(o.pullPolicy)}))
	}
	for _, ic := range s.Intercepts {
		p := &intercept.Part{Namespace: ns, Service: ic.Service, Port: ic.Port, All: ic.All, Mirror: ic.Mirror,
			LocalAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(ic.LocalPort)),
			Agent:     intercept.AgentSpec{Image: o.agentImage, PullPolicy: corev1.PullPolicy(o.pullPolicy)},
			OpenShared: func(ctx context.Context, id string) (*session.Session, error) {
				return openSession(ctx, a, o.flags, id, session.Config{})
			},
		}
		// A local process of the environment starts after the intercepts.
		p.LocalStartsLater = len(s.Run) > 0
		p.Match, _ = ic.Match() // checked when the file was read
		parts = append(parts, newInterceptPart(a, user, o.IOStreams, p))
	}
	for _, r := range s.Run {
		p := &localrun.Part{Label: r.Name, Command: r.Command, Dir: f.Path(r.Dir), Container: r.Container, Env: r.Env, Ready: r.Ready,
			Kube: a.Kube, Namespace: ns, Out: o.Out, ErrOut: o.ErrOut}
		if p.Dir == "" {
			p.Dir = f.Dir
		}
		if r.EnvFrom != "" {
			ref, _ := workload.Parse(r.EnvFrom)
			p.EnvFrom = &ref
		}
		// A process listening on an intercept's local port answers that
		// Service's intercepted requests.
		for _, ic := range s.Intercepts {
			if _, port, _ := net.SplitHostPort(r.Ready); port == strconv.Itoa(ic.LocalPort) {
				p.StandsFor = ic.Service
			}
		}
		parts = append(parts, p)
	}
	return parts
}
