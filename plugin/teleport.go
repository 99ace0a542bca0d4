package plugin

import (
	"context"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-cz/kubectl-cz/containerenv"
	"github.com/kubectl-cz/kubectl-cz/lifecycle"
	"github.com/kubectl-cz/kubectl-cz/netstack/teleport"
	"github.com/kubectl-cz/kubectl-cz/workload"
)

type teleportOptions struct {
	flags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams

	namespaces []string
	exclude    []string
	dns        string
	domain     string
	sessionID  string

	// A workload teleport: its namespace, and its environment in a file.
	workload  *workload.Ref
	envFile   string
	envFormat string
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
	f.StringVar(&o.domain, "cluster-domain", "", "The cluster's DNS domain (default: read from kube-system's coredns ConfigMap where you may, else cluster.local)")
	f.StringVar(&o.sessionID, "session", "", "Session to record the changes in (default: a new one)")
	f.StringVar(&o.envFile, "env-file", "", "Workload teleport: where to write the workload's environment (default NAME.env)")
	f.StringVar(&o.envFormat, "env-format", "env", "Workload teleport: format of the env file: "+strings.Join(containerenv.Formats, ", "))
	return cmd
}

func (o *teleportOptions) complete(c *cobra.Command, args []string) error {
	args = workload.SplitArgs(args)
	switch {
	case len(args) > 0 && (args[0] == "namespace" || args[0] == "namespaces" || args[0] == "ns"):
		o.namespaces = args[1:]
	case len(args) == 2 && isWorkload(args[0]):
		ref, err := workload.New(args[0], args[1])
		if err != nil {
			return usageError(c, "%v", err)
		}
		o.workload = &ref
		if o.envFile == "" {
			o.envFile = ref.Name + ".env"
		}
	default:
		return usageError(c, "want: kubectl cz teleport namespace [NAMESPACE ...], or kubectl cz teleport deployment|statefulset|pod NAME")
	}
	switch o.dns {
	case teleport.DNSAuto, teleport.DNSResolvConf, teleport.DNSHosts, teleport.DNSNone:
	default:
		return usageError(c, "--dns %q: want auto, resolvconf, hosts or none", o.dns)
	}
	if !containerenv.ValidFormat(o.envFormat) {
		return usageError(c, "--env-format %q: want one of %s", o.envFormat, strings.Join(containerenv.Formats, ", "))
	}
	return nil
}

func isWorkload(s string) bool { _, ok := workload.Kind(s); return ok }

func (o *teleportOptions) run(ctx context.Context) error {
	a, err := resolveAccess(o.flags)
	if err != nil {
		return err
	}
	if len(o.namespaces) == 0 {
		o.namespaces = []string{a.Namespace}
	}
	var parts []lifecycle.Part
	if o.workload != nil {
		// The environment file first: a local build started with it must
		// find it once teleport is active.
		parts = append(parts, &workload.EnvFile{Kube: a.Kube, Namespace: a.Namespace, Workload: *o.workload, Path: o.envFile, Format: o.envFormat, Out: o.Out, ErrOut: o.ErrOut})
	}
	parts = append(parts, newTeleportPart(a, o.Out, teleport.Config{Namespaces: o.namespaces, Exclude: o.exclude, DNS: o.dns, Domain: o.domain}))
	return lifecycle.Run(ctx, lifecycleConfig(a, o.flags, o.sessionID, o.IOStreams, ", the next kubectl cz command on this machine undoes its changes"), parts...)
}

func newTeleportPart(a *clusterAccess, out io.Writer, cfg teleport.Config) *teleport.Part {
	cfg.Kube, cfg.Rest, cfg.Log = a.Kube, a.Rest, out
	return &teleport.Part{Config: cfg, Start: time.Now()}
}
