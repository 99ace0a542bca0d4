package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/cli-runtime/pkg/printers"

	"github.com/kubectl-cz/kubectl-cz/lifecycle"
	"github.com/kubectl-cz/kubectl-cz/session"
)

const (
	// heartbeatInterval is how often a running primitive stamps its journals.
	heartbeatInterval = 10 * time.Second
	// staleAfter: a session silent this long is shown as stale, and may be
	// closed from elsewhere without --force.
	staleAfter = 3 * heartbeatInterval
)

// NewSessionCommand returns `kubectl cz session` and its subcommands.
func NewSessionCommand(flags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "session",
		Short: "List and close the recorded alterations of the cluster (sessions)",
		Long: `Every alteration kubectl cz makes is recorded before it is made, in a journal kept in
ConfigMaps of the namespaces it touches (cz-session-<id>) and, for laptop-side changes, in a
local file. Closing a session undoes its alterations newest first and gives back the objects
as they were: also after a crash, and also from another machine with the same kubeconfig.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return c.Help() },
	}
	cmd.AddCommand(newSessionListCommand(flags, streams), newSessionShowCommand(flags, streams), newSessionCloseCommand(flags, streams), newSessionGCCommand(flags, streams))
	return cmd
}

// listSessions resolves the kubeconfig, undoes what a crashed kubectl cz
// left on this machine, and lists the sessions in the current namespace (or
// all), with this machine's local ones.
func listSessions(ctx context.Context, flags *genericclioptions.ConfigFlags, all bool, errOut io.Writer) (*clusterAccess, []session.Summary, error) {
	a, err := resolveAccess(flags)
	if err != nil {
		return nil, nil, err
	}
	lifecycle.Recover(ctx, a.Clients, session.DefaultStateDir(), errOut)
	var namespaces []string
	if !all {
		namespaces = []string{a.Namespace}
	}
	list, err := session.List(ctx, a.Clients, namespaces, session.DefaultStateDir())
	return a, list, err
}

// sessionState is how a listing describes a session's liveness.
func sessionState(s session.Summary, now time.Time) string {
	switch alive, known := session.OwnerAlive(s.Owner); {
	case s.Corrupt != "":
		return "corrupt"
	case known && alive:
		return "active"
	case known && !alive:
		return "abandoned"
	case s.Heartbeat.IsZero() || s.Silence(now) > staleAfter:
		return "stale"
	default:
		return "active"
	}
}

type sessionListOptions struct {
	flags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams
	allNamespaces bool
	output        string
}

func newSessionListCommand(flags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &sessionListOptions{flags: flags, IOStreams: streams}
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List sessions in the namespace (or all namespaces with -A), and this machine's local ones",
		Example: `  # Sessions with journals in the current namespace
  kubectl cz session list

  # In every namespace, with entry counts and owner process
  kubectl cz session list -A -o wide

  # For scripts: a SessionList, as kubectl prints Lists
  kubectl cz session list -A -o json
  kubectl cz session list -o name
  kubectl cz session list -o jsonpath='{range .items[*]}{.metadata.name} {.status.state}{"\n"}{end}'`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			switch {
			case o.output == "", o.output == "wide", o.output == "json", o.output == "yaml", o.output == "name":
			case strings.HasPrefix(o.output, "jsonpath="):
				if _, err := printers.NewJSONPathPrinter(strings.TrimPrefix(o.output, "jsonpath=")); err != nil {
					return usageError(c, "--output %s: %v", o.output, err)
				}
			default:
				return usageError(c, "--output must be wide, json, yaml, name or jsonpath=TEMPLATE, not %q", o.output)
			}
			return o.run(c.Context())
		},
	}
	cmd.Flags().BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "List sessions in all namespaces")
	cmd.Flags().StringVarP(&o.output, "output", "o", "", "Output format: wide, json, yaml, name or jsonpath=TEMPLATE")
	return cmd
}

// sessionView is a listed session with its state.
type sessionView struct {
	session.Summary
	State string
}

// sessionAPIVersion names the shape of listed sessions, as kubectl names a
// resource's: scripts read them with -o json, yaml, name or jsonpath.
const sessionAPIVersion = "cz.dev/v1alpha1"

// sessionList is the listing as a List of Session objects, Kubernetes-style.
func sessionList(views []sessionView) (*unstructured.UnstructuredList, error) {
	list := &unstructured.UnstructuredList{Object: map[string]any{"apiVersion": sessionAPIVersion, "kind": "SessionList", "metadata": map[string]any{}}}
	for _, v := range views {
		obj := map[string]any{
			"apiVersion": sessionAPIVersion, "kind": "Session",
			"metadata": map[string]any{"name": v.ID, "creationTimestamp": v.Created.UTC().Format(time.RFC3339)},
			"spec":     map[string]any{"namespaces": v.Namespaces, "owner": v.Owner, "primitives": v.Primitives},
			"status":   map[string]any{"state": v.State, "entries": v.Entries, "local": v.Local, "heartbeat": v.Heartbeat, "corrupt": v.Corrupt},
		}
		// Through JSON, so every value is one unstructured printers take.
		b, err := json.Marshal(obj)
		if err != nil {
			return nil, err
		}
		var u unstructured.Unstructured
		if err := u.UnmarshalJSON(b); err != nil {
			return nil, err
		}
		list.Items = append(list.Items, u)
	}
	return list, nil
}

// sessionPrinter is cli-runtime's printer for -o json|yaml|name|jsonpath,
// nil for the table formats.
func sessionPrinter(output string) (printers.ResourcePrinter, error) {
	switch {
	case output == "json":
		return &printers.JSONPrinter{}, nil
	case output == "yaml":
		return &printers.YAMLPrinter{}, nil
	case output == "name":
		return &printers.NamePrinter{}, nil
	case strings.HasPrefix(output, "jsonpath="):
		return printers.NewJSONPathPrinter(strings.TrimPrefix(output, "jsonpath="))
	}
	return nil, nil
}

func (o *sessionListOptions) run(ctx context.Context) error {
	a, list, err := listSessions(ctx, o.flags, o.allNamespaces, o.ErrOut)
	if err != nil {
		return err
	}
	now := time.Now()
	views := make([]sessionView, 0, len(list))
	for _, s := range list {
		views = append(views, sessionView{Summary: s, State: sessionState(s, now)})
	}
	if p, err := sessionPrinter(o.output); err != nil || p != nil {
		if err != nil {
			return err
		}
		list, err := sessionList(views)
		if err != nil {
			return err
		}
		return p.PrintObj(list, o.Out)
	}
	if len(views) == 0 {
		where := "namespace " + a.Namespace
		if o.allNamespaces {
			where = "any namespace"
		}
		fmt.Fprintf(o.ErrOut, "No sessions found in %s.\n", where)
		return nil
	}
	w := printers.GetNewTabWriter(o.Out)
	defer w.Flush()
	header := "ID\tNAMESPACES\tOWNER\tAGE\tPRIMITIVES\tHEARTBEAT\tSTATE"
	if o.output == "wide" {
		header += "\tENTRIES\tHOST\tPID\tLOCAL"
	}
	fmt.Fprintln(w, header)
	for _, v := range views {
		ns := strings.Join(v.Namespaces, ",")
		if ns == "" {
			ns = "(laptop)"
		}
		prims := strings.Join(v.Primitives, ",")
		if prims == "" {
			prims = "-"
		}
		beat := "-"
		if !v.Heartbeat.IsZero() {
			beat = duration.HumanDuration(now.Sub(v.Heartbeat)) + " ago"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s", v.ID, ns, v.Owner.User, duration.HumanDuration(now.Sub(v.Created)), prims, beat, v.State)
		if o.output == "wide" {
			fmt.Fprintf(w, "\t%d\t%s\t%d\t%v", v.Entries, v.Owner.Host, v.Owner.PID, v.Local)
		}
		fmt.Fprintln(w)
	}
	return nil
}

type sessionCloseOptions struct {
	flags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams
	all, force bool
	ids        []string
}

func newSessionCloseCommand(flags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &sessionCloseOptions{flags: flags, IOStreams: streams}
	cmd := &cobra.Command{
		Use:   "close [ID ...|--all]",
		Short: "Undo a session's alterations and remove its journals",
		Long: `Undo the alterations of the named sessions, newest first, and remove their journals.

A session is found in every namespace you may list ConfigMaps in (else in the current
namespace). Patched objects get back the exact original of the fields the session changed.
If someone else changed such a field since, close stops there and says so; --force puts the
original back anyway. A session still held by a running kubectl cz, or owned by another
cluster user, is refused without --force: stop it there with Ctrl-C, which closes it.

A journal is checked before anything is undone, since anyone who may create ConfigMaps could
write one: each entry must stay in its journal's namespace and within what its primitive
touches, a patched object must carry the mark of this very journal, a created object must be
owned by it, and laptop-side entries come only from this machine's local journal. A journal
that fails a check changes nothing, --force or not.`,
		Example: `  # Close one session (from any machine with the kubeconfig)
  kubectl cz session close k3xq9z

  # Close every session in the current namespace
  kubectl cz session close --all`,
		RunE: func(c *cobra.Command, args []string) error {
			o.ids = args
			if o.all == (len(args) > 0) {
				return usageError(c, "name the sessions to close, or pass --all")
			}
			for _, id := range args {
				if err := session.ValidateID(id); err != nil {
					return err
				}
			}
			return o.run(c.Context())
		},
	}
	cmd.ValidArgsFunction = func(c *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
		_, list, err := listSessions(c.Context(), flags, false, io.Discard)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ids := make([]string, 0, len(list))
		for _, s := range list {
			ids = append(ids, s.ID+"\t"+strings.Join(s.Primitives, ",")+" by "+s.Owner.User)
		}
		return ids, cobra.ShellCompDirectiveNoFileComp
	}
	cmd.Flags().BoolVar(&o.all, "all", false, "Close every session in the current namespace")
	cmd.Flags().BoolVar(&o.force, "force", false, "Put originals back even over later changes, and close sessions that look alive or belong to another user")
	return cmd
}

func (o *sessionCloseOptions) run(ctx context.Context) error {
	a, err := resolveAccess(o.flags)
	if err != nil {
		return err
	}
	lifecycle.Recover(ctx, a.Clients, session.DefaultStateDir(), o.ErrOut)
	ids := o.ids
	if o.all {
		list, err := session.List(ctx, a.Clients, []string{a.Namespace}, session.DefaultStateDir())
		if err != nil {
			return err
		}
		for _, s := range list {
			ids = append(ids, s.ID)
		}
		if len(ids) == 0 {
			fmt.Fprintf(o.ErrOut, "No sessions found in namespace %s.\n", a.Namespace)
			return nil
		}
	}
	var errs []error
	user := whoAmI(ctx, a, o.flags)
	for _, id := range ids {
		if err := session.CloseID(ctx, a.Clients, id, a.Namespace, session.DefaultStateDir(), session.Policy{Force: o.force, User: user}, o.Out); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

type sessionGCOptions struct {
	flags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams
	expiry        time.Duration
	allNamespaces bool
	dryRun        bool
}

func newSessionGCCommand(flags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &sessionGCOptions{flags: flags, IOStreams: streams}
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Close abandoned sessions: those whose heartbeat stopped longer ago than --expiry",
		Long: `Close the sessions nobody holds any more: every running kubectl cz in a session stamps
its journals every 10s, so a session whose last heartbeat is older than --expiry was left behind
by a crash, a lost laptop or a closed terminal. Sessions whose owner process runs on this machine
are never collected.`,
		Example: `  # Collect sessions silent for more than a minute, in the current namespace
  kubectl cz session gc

  # Everywhere, silent for an hour, showing what would be closed
  kubectl cz session gc -A --expiry 1h --dry-run`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if o.expiry <= 0 {
				return usageError(c, "--expiry must be positive")
			}
			return o.run(c.Context())
		},
	}
	cmd.Flags().DurationVar(&o.expiry, "expiry", time.Minute, "Close sessions whose last heartbeat is older than this")
	cmd.Flags().BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "Look in all namespaces")
	cmd.Flags().BoolVar(&o.dryRun, "dry-run", false, "Only print what would be closed")
	return cmd
}

func (o *sessionGCOptions) run(ctx context.Context) error {
	a, list, err := listSessions(ctx, o.flags, o.allNamespaces, o.ErrOut)
	if err != nil {
		return err
	}
	now := time.Now()
	var errs []error
	collected := 0
	for _, s := range list {
		if ok, why := session.Abandoned(s, now, o.expiry); !ok {
			if s.Corrupt != "" {
				fmt.Fprintf(o.ErrOut, "skipped session %s: %s\n", s.ID, why)
			}
			continue
		}
		collected++
		if o.dryRun {
			fmt.Fprintf(o.Out, "would close session %s (%s, silent for %s)\n", s.ID, s.Owner, duration.HumanDuration(s.Silence(now)))
			continue
		}
		if err := session.CloseID(ctx, a.Clients, s.ID, a.Namespace, session.DefaultStateDir(), session.Policy{GC: true}, o.Out); err != nil {
			errs = append(errs, err)
		}
	}
	if collected == 0 {
		fmt.Fprintf(o.ErrOut, "No abandoned sessions (silent for more than %s).\n", o.expiry)
	}
	return errors.Join(errs...)
}
