package plugin

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-cz/kubectl-cz/agent/wire"
	"github.com/kubectl-cz/kubectl-cz/intercept"
	"github.com/kubectl-cz/kubectl-cz/lifecycle"
	"github.com/kubectl-cz/kubectl-cz/session"
)

// AgentDigest is the digest of this release's agent image, set by the
// linker when the image was built with the plugin (make build, make dist).
var AgentDigest string

// DefaultAgentImage is the agent image of this release, by tag and, where
// the build knows it, digest: a tag moved in the registry cannot swap the
// code that runs in the cluster. The local test cluster imports it under
// both names.
func DefaultAgentImage() string {
	image := "ghcr.io/kubectl-cz/cz-agent:" + Version
	if AgentDigest != "" {
		image += "@" + AgentDigest
	}
	return image
}

// defaultHeader is the header matched when --header is not given.
const defaultHeader = "x-cz-intercept"

type interceptOptions struct {
	flags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams

	service    string
	localPort  int
	remotePort string
	rule       ruleFlags
	record     string
	recordAll  bool
	sessionID  string
	agentImage string
	pullPolicy string

	match wire.Match
}

// NewInterceptCommand returns `kubectl cz intercept`.
func NewInterceptCommand(flags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &interceptOptions{flags: flags, IOStreams: streams}
	cmd := &cobra.Command{
		Use:   "intercept service NAME --local-port PORT [--header K=V] [--path PREFIX] [--method M] | --all",
		Short: "Send a Service's traffic, or only requests with your header, to a port on this machine",
		Long: `Send the requests that cluster callers make to a Service to a process on this machine:
only those your rule takes (default: the header x-cz-intercept: <your user>), or, with --all,
every connection. A rule is a header's value (or a regular expression for it, or a W3C baggage
member), a path prefix (or a regular expression), a method, or several of them: a request is
yours when all of them hold. Everything else keeps reaching the Service's pods, so several
developers can share one Service; a rule that could match the same requests as another
developer's is refused, naming theirs.

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

  # POST requests under /orders carrying your header
  kubectl cz intercept service core --local-port 3000 --path /orders --method POST

  # Requests whose x-tenant header names one of the test tenants
  kubectl cz intercept service core --local-port 3000 --header-regex 'x-tenant=test-[0-9]+'

  # A copy of each request with your header, while the cluster keeps answering them
  kubectl cz intercept service core --local-port 3000 --mirror

  # Record what reaches your laptop, then send it again to another build
  kubectl cz intercept service core --local-port 3000 --record core.jsonl
  kubectl cz replay core.jsonl --to 127.0.0.1:3001

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
	o.rule.add(f, "")
	f.StringVar(&o.record, "record", "", "Write the requests that reach the local port, with their answers, to this file (JSON lines; replay them with kubectl cz replay)")
	f.BoolVar(&o.recordAll, "record-secrets", false, "With --record: keep Authorization, Proxy-Authorization, Cookie and Set-Cookie values (redacted otherwise)")
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
	if err := checkPullPolicy(o.pullPolicy); err != nil {
		return usageError(c, "%v", err)
	}
	if o.sessionID != "" {
		if err := session.ValidateID(o.sessionID); err != nil {
			return err
		}
	}
	m, err := o.rule.match()
	if err != nil {
		return usageError(c, "%v", err)
	}
	o.match = m
	return nil
}

func checkPullPolicy(p string) error {
	for _, ok := range intercept.PullPolicies {
		if corev1.PullPolicy(p) == ok {
			return nil
		}
	}
	return fmt.Errorf("--agent-pull-policy must be IfNotPresent, Always or Never, not %q", p)
}

// headerValue turns a cluster user name into a header value a developer can
// type: "system:serviceaccount:team:alice" becomes "alice".
func headerValue(user string) string {
	if i := strings.LastIndex(user, ":"); i >= 0 {
		user = user[i+1:]
	}
	return strings.ToLower(user)
}

func (o *interceptOptions) run(ctx context.Context) error {
	a, err := resolveAccess(o.flags)
	if err != nil {
		return err
	}
	user := whoAmI(ctx, a, o.flags)
	id := o.sessionID
	if id == "" {
		id = intercept.SessionID(a.Namespace, o.service)
	}
	part := newInterceptPart(a, user, o.IOStreams, &intercept.Part{
		Service: o.service, Port: o.remotePort, LocalAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(o.localPort)),
		All: o.rule.all, Mirror: o.rule.mirror, Match: o.match, SessionID: id, Record: o.record, RecordSecrets: o.recordAll,
		Agent: intercept.AgentSpec{Image: o.agentImage, PullPolicy: corev1.PullPolicy(o.pullPolicy)},
	})
	return lifecycle.Run(ctx, lifecycleConfig(a, o.flags, id, o.IOStreams, ": kubectl cz session close %[1]s"), part)
}

// newInterceptPart fills in what every intercept part gets from the
// command line's access: clients, namespace, the developer's name and the
// default header rule.
func newInterceptPart(a *clusterAccess, user string, streams genericiooptions.IOStreams, p *intercept.Part) *intercept.Part {
	host, _ := os.Hostname()
	p.Clients, p.Out, p.ErrOut, p.Start, p.Heartbeat = a.Clients, streams.Out, streams.ErrOut, time.Now(), heartbeatInterval
	if p.Namespace == "" {
		p.Namespace = a.Namespace
	}
	p.Developer = fmt.Sprintf("%s@%s", user, host)
	if !p.All && p.Match.IsZero() {
		p.Match = wire.Match{Header: defaultHeader, Value: headerValue(user)}
	}
	return p
}
