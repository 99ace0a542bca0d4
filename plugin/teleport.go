package plugin

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-cz/kubectl-cz/lifecycle"
	"github.com/kubectl-cz/kubectl-cz/netstack/localnet"
	"github.com/kubectl-cz/kubectl-cz/netstack/teleport"
	"github.com/kubectl-cz/kubectl-cz/netstack/workloadenv"
	"github.com/kubectl-cz/kubectl-cz/session"
)

type teleportOptions struct {
	flags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams

	namespaces []string
	exclude    []string
	dns        string
	sessionID  string

	// A workload teleport: its namespace, and its environment in a file.
	kind, name string
	envFile    string
	envFormat  string
}

// NewTeleportCommand returns `kubectl cz teleport`.
func NewTeleportCommand(flags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &teleportOptions{flags: flags, IOStreams: streams}
	cmd := &cobra.Command{
		Use:   "teleport (namespace [NAMESPACE ...] | deployment|statefulset|pod NAME) [--exclude SERVICE ...] [--dns auto|resolvconf|hosts|none]",
		Short: "Reach every Service of namespaces from this machine by its cluster DNS names",
		Long: `Make this machine behave as if it were inside the cluster: every Service of the namespaces
answers at its cluster DNS names (svc, svc.ns, svc.ns.svc.cluster.local) and ports, and pods of
headless Services at theirs. Each connection goes over port-forward to a ready pod picked from the
Service's endpoints at that moment, so a pod that goes away is replaced without a restart.

Services get their own ClusterIP on the loopback interface where it clashes with no network here,
else an address in 127.241.0.0/16. A DNS shim on 127.0.21.53 answers cluster names and passes the
rest to the resolvers that were configured (--dns resolvconf, the default); --dns hosts writes a
marked block in /etc/hosts instead; --dns none leaves name resolution alone.

A workload teleport (deployment, statefulset or pod NAME) teleports the workload's namespace and
writes the environment its container gets in the cluster to a file (--env-file, default NAME.env;
see 'kubectl cz env'), so a local build of it runs as it would there. The file holds Secret values
and is removed when teleport ends.

It changes this machine's network, so it runs as root (sudo -E). Every change is journaled first
and undone on Ctrl-C; after a crash, the next kubectl cz command undoes it.`,
		Example: `  # The current namespace
  sudo -E kubectl cz teleport namespace

  # Two namespaces; bare names are those of the first
  sudo -E kubectl cz teleport namespace shop payments

  # Leave a Service out, and use /etc/hosts instead of the resolver
  sudo -E kubectl cz teleport namespace shop --exclude legacy-db --dns hosts

  # Run deployment core locally: its namespace, and its environment in core.env
  sudo -E kubectl cz teleport deployment core -n shop
  set -a; . ./core.env; set +a; go run ./cmd/core`,
		RunE: func(c *cobra.Command, args []string) error {
			if err := o.complete(c, args); err != nil {
				return err
			}
			return o.run(c.Context())
		},
	}
	cmd.ValidArgsFunction = func(c *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) == 0 {
			return []string{"namespace", "deployment", "statefulset", "pod"}, cobra.ShellCompDirectiveNoFileComp
		}
		if isWorkload(args[0]) {
			return completeWorkload(c, flags, args)
		}
		a, err := resolveAccess(flags)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		list, err := a.Kube.CoreV1().Namespaces().List(c.Context(), metav1.ListOptions{})
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var names []string
		for _, ns := range list.Items {
			names = append(names, ns.Name)
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	}
	f := cmd.Flags()
	f.StringSliceVar(&o.exclude, "exclude", nil, "Services to leave out, as NAME or NAMESPACE/NAME (repeatable)")
	f.StringVar(&o.dns, "dns", teleport.DNSAuto, "How names resolve: auto, resolvconf (the shim in /etc/resolv.conf), hosts (a block in /etc/hosts) or none")
	f.StringVar(&o.sessionID, "session", "", "Session to record the changes in (default: a new one)")
	f.StringVar(&o.envFile, "env-file", "", "Workload teleport: where to write the workload's environment (default NAME.env)")
	f.StringVar(&o.envFormat, "env-format", "env", "Workload teleport: format of the env file: "+strings.Join(workloadenv.Formats, ", "))
	return cmd
}

func (o *teleportOptions) complete(c *cobra.Command, args []string) error {
	if len(args) == 1 {
		if kind, name, ok := strings.Cut(args[0], "/"); ok {
			args = []string{kind, name}
		}
	}
	switch {
	case len(args) > 0 && (args[0] == "namespace" || args[0] == "namespaces" || args[0] == "ns"):
		o.namespaces = args[1:]
	case len(args) == 2 && isWorkload(args[0]):
		o.kind, _ = workloadKind(args[0])
		o.name = args[1]
		if o.envFile == "" {
			o.envFile = o.name + ".env"
		}
	default:
		return usageError(c, "want: kubectl cz teleport namespace [NAMESPACE ...], or kubectl cz teleport deployment|statefulset|pod NAME")
	}
	switch o.dns {
	case teleport.DNSAuto, teleport.DNSResolvConf, teleport.DNSHosts, teleport.DNSNone:
	default:
		return usageError(c, "--dns %q: want auto, resolvconf, hosts or none", o.dns)
	}
	for _, f := range workloadenv.Formats {
		if f == o.envFormat {
			return nil
		}
	}
	return usageError(c, "--env-format %q: want one of %s", o.envFormat, strings.Join(workloadenv.Formats, ", "))
}

func isWorkload(s string) bool { _, ok := workloadKind(s); return ok }

// writeEnv writes the workload's environment to the env file, journaled,
// before anything else changes.
func (o *teleportOptions) writeEnv(ctx context.Context, a *clusterAccess, s *session.Session) error {
	src, err := workloadSource(ctx, a.Kube, a.Namespace, o.kind, o.name)
	if err != nil {
		return err
	}
	if src.Container, err = pickContainer(o.ErrOut, src, ""); err != nil {
		return err
	}
	var buf bytes.Buffer
	n, err := renderEnv(ctx, a.Kube, src, o.envFormat, &buf, o.ErrOut)
	if err != nil {
		return err
	}
	if err := localnet.WriteFile(ctx, s, o.envFile, buf.Bytes(), 0o600); err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "environment of %s %s (container %s, %d variables) written to %s; removed when teleport ends\n", o.kind, o.name, src.Container, n, o.envFile)
	return nil
}

func (o *teleportOptions) run(parent context.Context) error {
	start := time.Now()
	ctx, stop := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	defer stop()
	a, err := resolveAccess(o.flags)
	if err != nil {
		return err
	}
	if len(o.namespaces) == 0 {
		o.namespaces = []string{a.Namespace}
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("teleport changes this machine's addresses and resolver: run it as root (sudo -E kubectl cz teleport ...)")
	}
	cfg, err := o.flags.ToRESTConfig()
	if err != nil {
		return err
	}
	for _, ns := range o.namespaces {
		if _, err := a.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return fmt.Errorf("namespace %q not found", ns)
		}
		// Teleport's changes are this machine's (no journal in the
		// cluster); what it needs there is to watch and to tunnel.
		if err := requireAccess(ctx, a, ns, "teleport", access{"list", "", "services"}, access{"watch", "", "services"},
			access{"list", "discovery.k8s.io", "endpointslices"}, access{"watch", "discovery.k8s.io", "endpointslices"}, tunnelAccess); err != nil {
			return err
		}
	}
	what := "teleport namespace " + strings.Join(o.namespaces, " ")
	if o.kind != "" {
		what = "teleport " + o.kind + " " + o.name
	}
	return lifecycle.Run(ctx, lifecycleConfig(a, o.flags, o.sessionID, o.IOStreams, ", the next kubectl cz command on this machine undoes its changes"), lifecycle.Func(what,
		func(ctx context.Context, s *session.Session, active func()) error {
			if o.kind != "" {
				if err := o.writeEnv(ctx, a, s); err != nil {
					return err
				}
			}
			err := teleport.Run(ctx, teleport.Config{
				Namespaces: o.namespaces, Exclude: o.exclude, DNS: o.dns,
				Kube: a.Kube, Rest: cfg, Session: s, Log: o.Out,
				Ready: func() {
					fmt.Fprintf(o.Out, "teleport active after %.1fs: the Services of %s answer here by their cluster names (Ctrl-C to stop)\n",
						time.Since(start).Seconds(), strings.Join(o.namespaces, ", "))
					active()
				},
			})
			fmt.Fprintln(o.Out, "restoring this machine's network and resolver")
			return err
		}))
}
