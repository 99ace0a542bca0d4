package plugin

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/rest"

	"github.com/kubectl-cz/kubectl-cz/agent/wire"
	"github.com/kubectl-cz/kubectl-cz/intercept"
	"github.com/kubectl-cz/kubectl-cz/lifecycle"
	"github.com/kubectl-cz/kubectl-cz/session"
)

// DefaultAgentImage is the agent image of this release; the local test
// cluster imports it under this name.
func DefaultAgentImage() string { return "ghcr.io/kubectl-cz/cz-agent:" + Version }

// defaultHeader is the header matched when --header is not given.
const defaultHeader = "x-cz-intercept"

type interceptOptions struct {
	flags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams

	service    string
	localPort  int
	remotePort string
	header     string
	all        bool
	sessionID  string
	agentImage string
	pullPolicy string

	match wire.Match
}

// NewInterceptCommand returns `kubectl cz intercept`.
func NewInterceptCommand(flags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &interceptOptions{flags: flags, IOStreams: streams}
	cmd := &cobra.Command{
		Use:   "intercept service NAME --local-port PORT [--header K=V | --all]",
		Short: "Send a Service's traffic, or only requests with your header, to a port on this machine",
		Long: `Send the requests that cluster callers make to a Service to a process on this machine:
only those carrying your header (default: x-cz-intercept: <your user>), or, with --all, every
connection. Everything else keeps reaching the Service's pods, so several developers can share
one Service, each with their own header value.

An interceptor (a Deployment of kubectl-cz's agent, passing Pod Security "restricted") takes the
Service's place; a decoy Service keeps selecting the original pods, which are not restarted. This
machine reaches the interceptor only through port-forward. Every change is journaled first; Ctrl-C
undoes it when you are the last developer on the Service. If this process dies, run
'kubectl cz session close <session>' (printed at start) from any machine.

HTTP/1.1, HTTP/2 cleartext (gRPC) and WebSocket pass through the header path; --all is plain TCP.`,
		Example: `  # Requests to service core carrying "x-cz-intercept: <you>" go to localhost:3000
  kubectl cz intercept service core --local-port 3000

  # Your own header value, on the Service's port named grpc
  kubectl cz intercept service core --local-port 9090 --remote-port grpc --header x-dev=alice

  # Match a W3C baggage member instead of a header
  kubectl cz intercept service core --local-port 3000 --header baggage:cz-intercept=alice

  # Every connection to the Service's port 80
  kubectl cz intercept service core --local-port 3000 --all`,
		RunE: func(c *cobra.Command, args []string) error {
			if err := o.complete(c, args); err != nil {
				return err
			}
			return o.run(c.Context())
		},
	}
	cmd.ValidArgsFunction = func(c *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) == 0 {
			return []string{"service"}, cobra.ShellCompDirectiveNoFileComp
		}
		if len(args) > 1 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		a, err := resolveAccess(flags)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		list, err := a.Kube.CoreV1().Services(a.Namespace).List(c.Context(), metav1.ListOptions{})
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var names []string
		for _, svc := range list.Items {
			if len(svc.Spec.Selector) > 0 && svc.Labels[session.LabelManagedBy] != session.ManagedBy {
				names = append(names, svc.Name)
			}
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	}
	f := cmd.Flags()
	f.IntVar(&o.localPort, "local-port", 0, "Port on this machine that receives the intercepted traffic (required)")
	f.StringVar(&o.remotePort, "remote-port", "", "Service port to intercept, by number or name (needed when the Service has several)")
	f.StringVar(&o.header, "header", "", "Take requests whose header K has value V (K=V), or whose W3C baggage has member K=V (baggage:K=V); default x-cz-intercept=<your user>")
	f.BoolVar(&o.all, "all", false, "Take every connection of the port (plain TCP, any protocol)")
	f.StringVar(&o.sessionID, "session", "", "Session to record the interceptor in (default: the Service's shared session, icpt-<namespace>-<service>)")
	f.StringVar(&o.agentImage, "agent-image", DefaultAgentImage(), "Image of the in-cluster agent")
	f.StringVar(&o.pullPolicy, "agent-pull-policy", string(corev1.PullIfNotPresent), "Pull policy of the agent image: IfNotPresent, Always or Never")
	return cmd
}

func (o *interceptOptions) complete(c *cobra.Command, args []string) error {
	if len(args) != 2 || !(args[0] == "service" || args[0] == "services" || args[0] == "svc") {
		return usageError(c, "want: kubectl cz intercept service NAME --local-port PORT")
	}
	o.service = args[1]
	if o.localPort < 1 || o.localPort > 65535 {
		return usageError(c, "--local-port must be a port number (1-65535)")
	}
	if o.all && o.header != "" {
		return usageError(c, "--all takes every connection: it cannot be combined with --header")
	}
	switch corev1.PullPolicy(o.pullPolicy) {
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		return usageError(c, "--agent-pull-policy must be IfNotPresent, Always or Never")
	}
	if o.sessionID != "" {
		if err := session.ValidateID(o.sessionID); err != nil {
			return err
		}
	}
	if o.header != "" {
		k, v, ok := strings.Cut(o.header, "=")
		if !ok || k == "" || v == "" {
			return usageError(c, "--header wants K=V or baggage:K=V, not %q", o.header)
		}
		if member, isBaggage := strings.CutPrefix(k, "baggage:"); isBaggage {
			o.match = wire.Match{Header: member, Value: v, Baggage: true}
		} else {
			o.match = wire.Match{Header: k, Value: v}
		}
	}
	return nil
}

// headerValue turns a cluster user name into a header value a developer can
// type: "system:serviceaccount:team:alice" becomes "alice".
func headerValue(user string) string {
	if i := strings.LastIndex(user, ":"); i >= 0 {
		user = user[i+1:]
	}
	return strings.ToLower(user)
}

func (o *interceptOptions) run(parent context.Context) error {
	start := time.Now()
	ctx, stop := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	defer stop()
	a, err := resolveAccess(o.flags)
	if err != nil {
		return err
	}
	cfg, err := o.flags.ToRESTConfig()
	if err != nil {
		return err
	}
	// Every right the intercept and its undo use, before anything changes;
	// a developer who joins an interceptor needs them too, since whoever
	// leaves last restores the Service.
	if err := requireAccess(ctx, a, a.Namespace, "intercept", append(journalAccess,
		access{"create", "", "secrets"}, access{"get", "", "secrets"}, access{"delete", "", "secrets"},
		access{"get", "", "services"}, access{"create", "", "services"}, access{"update", "", "services"}, access{"delete", "", "services"},
		access{"get", "apps", "deployments"}, access{"create", "apps", "deployments"}, access{"delete", "apps", "deployments"},
		access{"list", "", "pods"}, tunnelAccess, access{"list", "discovery.k8s.io", "endpointslices"})...); err != nil {
		return err
	}
	plan, err := intercept.Prepare(ctx, a.Kube, intercept.Target{Namespace: a.Namespace, Service: o.service, Port: o.remotePort})
	if err != nil {
		return err
	}
	user := whoAmI(ctx, a, o.flags)
	if !o.all && o.match.Header == "" {
		o.match = wire.Match{Header: defaultHeader, Value: headerValue(user)}
	}
	id := o.sessionID
	if id == "" {
		id = intercept.SessionID(a.Namespace, o.service)
	}
	localAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(o.localPort))
	if c, err := net.DialTimeout("tcp", localAddr, time.Second); err != nil {
		fmt.Fprintf(o.ErrOut, "warning: nothing listens on %s yet: intercepted requests get a 502 until something does\n", localAddr)
	} else {
		c.Close()
	}
	part := &interceptPart{o: o, a: a, cfg: cfg, plan: plan, user: user, id: id, localAddr: localAddr, start: start}
	return lifecycle.Run(ctx, lifecycleConfig(a, o.flags, id, o.IOStreams, ": kubectl cz session close %[1]s"), part)
}

// interceptPart is one developer's intercept of a Service. The interceptor
// lives in the Service's shared session; the developer who installed it
// records it, and whoever leaves last restores the Service (Close).
type interceptPart struct {
	o         *interceptOptions
	a         *clusterAccess
	cfg       *rest.Config
	plan      *intercept.Plan
	user, id  string
	localAddr string
	start     time.Time

	installed bool // this process installed the interceptor
	tunneled  bool // the tunnel ran (so the agent counted us)
	remaining int  // developers left after our goodbye (-1: unknown)
}

func (p *interceptPart) Name() string { return "intercept service " + p.o.service }

func (p *interceptPart) Run(ctx context.Context, s *session.Session, active func()) error {
	o := p.o
	if p.plan.Existing {
		fmt.Fprintf(o.Out, "service %s is already intercepted: joining its interceptor\n", o.service)
		if err := s.Attach(ctx, p.a.Namespace); err != nil {
			return err
		}
	} else {
		agent := intercept.AgentSpec{Image: o.agentImage, PullPolicy: corev1.PullPolicy(o.pullPolicy)}
		p.installed = true
		if err := intercept.Install(ctx, s, p.a.Kube, p.cfg, p.plan, agent, o.Out); err != nil {
			return err
		}
	}
	r := &intercept.Runner{
		Config: p.cfg, Kube: p.a.Kube, Namespace: p.a.Namespace, Service: o.service, LocalAddr: p.localAddr, Out: o.Out,
		Hello: wire.Hello{Developer: fmt.Sprintf("%s@%s", p.user, s.Meta().Owner.Host), Port: p.plan.PortKey, All: o.all, Match: o.match},
	}
	what := "requests with " + o.match.String()
	if o.all {
		what = "every connection"
	}
	p.tunneled = true
	remaining, err := r.Run(ctx, func(first bool) {
		if first {
			fmt.Fprintf(o.Out, "intercept active after %.1fs: %s to service %s port %s now reach %s (Ctrl-C to stop)\n",
				time.Since(p.start).Seconds(), what, o.service, p.plan.PortKey, p.localAddr)
			active()
		} else {
			fmt.Fprintln(o.Out, "tunnel up again")
		}
	})
	p.remaining = remaining
	return err
}

// Close undoes the interceptor after a failure of this process's install,
// and otherwise leaves it to the last developer.
func (p *interceptPart) Close(_ context.Context, s *session.Session, runErr error) error {
	switch {
	case p.installed && runErr != nil:
		return p.o.undo(s, runErr)
	case p.installed && !p.tunneled: // stopped while installing
		if _, err := s.Close(context.Background(), session.CloseOptions{Log: lifecycle.Indent(p.o.ErrOut)}); err != nil {
			return fmt.Errorf("undoing the interceptor failed: %v (run kubectl cz session close %s)", err, s.ID())
		}
		return nil
	case runErr != nil:
		return runErr
	case !p.tunneled:
		return nil
	}
	return p.o.leave(p.a, p.id, p.remaining)
}

// undo closes what this process installed after a failure, and reports both.
func (o *interceptOptions) undo(s *session.Session, cause error) error {
	if _, err := s.Close(context.Background(), session.CloseOptions{Log: lifecycle.Indent(o.ErrOut)}); err != nil {
		return fmt.Errorf("%w; undoing the interceptor failed too: %v (run kubectl cz session close %s)", cause, err, s.ID())
	}
	return cause
}

// leave restores the Service when no developer remains on the interceptor.
func (o *interceptOptions) leave(a *clusterAccess, id string, remaining int) error {
	switch {
	case remaining > 0:
		fmt.Fprintf(o.Out, "left; %d other developer(s) still intercept service %s, so the interceptor stays\n", remaining, o.service)
		return nil
	case remaining < 0:
		fmt.Fprintf(o.Out, "left without reaching the interceptor; if nobody else uses it, run: kubectl cz session close %s\n", id)
		return nil
	}
	fmt.Fprintln(o.Out, "last developer left: restoring service", o.service)
	return closeSession(context.Background(), a, id, closeMode{self: true}, o.Out)
}
