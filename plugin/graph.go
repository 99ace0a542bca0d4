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
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/yaml"

	"github.com/kubectl-cz/kubectl-cz/graph"
	"github.com/kubectl-cz/kubectl-cz/session"
)

// graphFormats are what -o takes for graph and session show.
var graphFormats = []string{"text", "dot", "mermaid", "json", "yaml"}

type graphOptions struct {
	flags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams
	output string
}

// NewGraphCommand returns `kubectl cz graph`.
func NewGraphCommand(flags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &graphOptions{flags: flags, IOStreams: streams}
	cmd := &cobra.Command{
		Use:   "graph [-n NAMESPACE] [-o text|dot|mermaid|json|yaml]",
		Short: "Draw a namespace's microservice graph, and what sessions altered on it",
		Long: `Draw the namespace's microservice graph: its Services and the workloads behind them, and
the calls their configuration names (other Services' cluster names in env values, command and
args, and in the ConfigMaps they read), each call saying where it was found. On it, what every
session altered: intercepted Services and the developers on them, mounted workloads, teleports
and the local processes that stand in for Services.

-o dot prints Graphviz (kubectl cz graph -o dot | dot -Tsvg > graph.svg), -o mermaid a Mermaid
flowchart (GitHub renders it). Nothing changes.`,
		Example: `  # The current namespace, for a terminal
  kubectl cz graph

  # A picture of namespace shop
  kubectl cz graph -n shop -o dot | dot -Tsvg > shop.svg`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if !oneOf(o.output, graphFormats) {
				return usageError(c, "-o %q: want one of %s", o.output, strings.Join(graphFormats, ", "))
			}
			return o.run(c.Context())
		},
	}
	cmd.Flags().StringVarP(&o.output, "output", "o", "text", "Format: "+strings.Join(graphFormats, ", "))
	_ = cmd.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return graphFormats, cobra.ShellCompDirectiveNoFileComp
	})
	return cmd
}

func oneOf(s string, set []string) bool {
	for _, v := range set {
		if s == v {
			return true
		}
	}
	return false
}

func (o *graphOptions) run(ctx context.Context) error {
	a, err := resolveAccess(o.flags)
	if err != nil {
		return err
	}
	g, err := graph.Build(ctx, a.Kube, a.Namespace)
	if err != nil {
		return err
	}
	altered, err := sessionAlterations(ctx, a, []string{a.Namespace})
	if err != nil {
		fmt.Fprintf(o.ErrOut, "warning: the sessions' alterations are not drawn: %v\n", err)
	}
	g.Decorate(ctx, altered)
	return printGraph(o.Out, o.output, g)
}

// sessionAlterations reads every session with a journal in namespaces, or
// a local journal here, as alterations to draw.
func sessionAlterations(ctx context.Context, a *clusterAccess, namespaces []string) ([]graph.Altered, error) {
	list, err := session.List(ctx, a.Clients, namespaces, session.DefaultStateDir())
	if err != nil {
		return nil, err
	}
	var out []graph.Altered
	var errs []error
	for _, s := range list {
		loaded, err := session.Load(ctx, a.Clients, s.ID, namespaces, session.DefaultStateDir())
		if err != nil || loaded == nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, altered(loaded))
	}
	return out, errors.Join(errs...)
}

func altered(l *session.Loaded) graph.Altered {
	al := graph.Altered{Session: l.Meta.ID, Owner: l.Meta.Owner.String()}
	for _, e := range l.Entries() {
		al.Alterations = append(al.Alterations, session.Describe(e))
	}
	return al
}

// printGraph writes graphs in one of graphFormats; several (one per
// namespace) follow each other, as a List in json and yaml.
func printGraph(w io.Writer, format string, graphs ...*graph.Graph) error {
	switch format {
	case "json", "yaml":
		var obj any = graphs[0]
		if len(graphs) != 1 {
			obj = map[string]any{"apiVersion": graph.APIVersion, "kind": "ServiceGraphList", "items": graphs}
		}
		return printObject(w, format, obj)
	}
	for i, g := range graphs {
		if i > 0 {
			fmt.Fprintln(w)
		}
		var err error
		switch format {
		case "dot":
			err = g.DOT(w)
		case "mermaid":
			err = g.Mermaid(w)
		default:
			err = g.Text(w)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// printObject prints an object as kubectl does: JSON indented by four
// spaces, or YAML.
func printObject(w io.Writer, format string, obj any) error {
	b, err := json.MarshalIndent(obj, "", "    ")
	if err != nil {
		return err
	}
	if format == "yaml" {
		if b, err = yaml.JSONToYAML(b); err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// sessionShowOptions shows one session.
type sessionShowOptions struct {
	flags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams
	id     string
	output string
}

func newSessionShowCommand(flags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &sessionShowOptions{flags: flags, IOStreams: streams}
	cmd := &cobra.Command{
		Use:   "show ID [-o text|dot|mermaid|json|yaml]",
		Short: "Show what a session altered: its entries in journal order, drawn on the namespace's graph",
		Long: `Show a session: who holds it, its entries in journal order (what each changed, in the
cluster or on this machine), and the graph of each namespace it touches with the session's
alterations on it: intercepted Services (by whom, for which header, to which laptop port),
teleported namespaces, mounted workloads, and local processes standing in for Services.`,
		Example: `  kubectl cz session show icpt-shop-core
  kubectl cz session show 4fj2kq -o mermaid`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if !oneOf(o.output, graphFormats) {
				return usageError(c, "-o %q: want one of %s", o.output, strings.Join(graphFormats, ", "))
			}
			o.id = args[0]
			return o.run(c.Context())
		},
	}
	cmd.Flags().StringVarP(&o.output, "output", "o", "text", "Format: "+strings.Join(graphFormats, ", "))
	return cmd
}

// sessionDetail is a session as -o json|yaml prints it.
type sessionDetail struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	ID         string         `json:"id"`
	Owner      session.Owner  `json:"owner"`
	Created    time.Time      `json:"created"`
	Entries    []entryDetail  `json:"entries"`
	Graphs     []*graph.Graph `json:"graphs"`
	Cluster    string         `json:"cluster,omitempty"`
}

type entryDetail struct {
	Seq       int64         `json:"seq"`
	Kind      string        `json:"kind"`
	Primitive string        `json:"primitive,omitempty"`
	Namespace string        `json:"namespace,omitempty"`
	State     session.State `json:"state"`
	Time      time.Time     `json:"time"`
	Owner     string        `json:"owner"`
	Text      string        `json:"text"`
}

func (o *sessionShowOptions) run(ctx context.Context) error {
	a, err := resolveAccess(o.flags)
	if err != nil {
		return err
	}
	if err := session.ValidateID(o.id); err != nil {
		return err
	}
	loaded, err := session.Find(ctx, a.Clients, o.id, a.Namespace, session.DefaultStateDir())
	if err != nil {
		return err
	}
	d := sessionDetail{APIVersion: graph.APIVersion, Kind: "Session", ID: loaded.Meta.ID, Owner: loaded.Meta.Owner, Created: loaded.Meta.Created, Cluster: loaded.Meta.Cluster, Entries: []entryDetail{}}
	var namespaces []string
	for _, e := range loaded.Entries() {
		alt := session.Describe(e)
		d.Entries = append(d.Entries, entryDetail{Seq: e.Seq, Kind: e.Kind, Primitive: e.Primitive, Namespace: e.Namespace, State: e.State, Time: e.Time, Owner: e.Owner.String(), Text: alt.Text})
		for _, ns := range alt.Namespaces {
			if !oneOf(ns, namespaces) {
				namespaces = append(namespaces, ns)
			}
		}
	}
	al := []graph.Altered{altered(loaded)}
	// An environment's intercepts live in their Services' shared sessions:
	// drawn with it.
	for _, alt := range al[0].Alterations {
		if alt.Joins == "" {
			continue
		}
		if joined, err := session.Load(ctx, a.Clients, alt.Joins, alt.Namespaces, ""); err == nil && joined != nil {
			al = append(al, altered(joined))
		}
	}
	for _, ns := range namespaces {
		g, err := graph.Build(ctx, a.Kube, ns)
		if err != nil {
			fmt.Fprintf(o.ErrOut, "warning: no graph of namespace %s: %v\n", ns, err)
			continue
		}
		g.Decorate(ctx, al)
		d.Graphs = append(d.Graphs, g)
	}
	switch o.output {
	case "json", "yaml":
		return printObject(o.Out, o.output, d)
	case "dot", "mermaid":
		if len(d.Graphs) == 0 {
			return fmt.Errorf("session %s touches no namespace to draw", o.id)
		}
		return printGraph(o.Out, o.output, d.Graphs...)
	}
	fmt.Fprintf(o.Out, "session %s, owned by %s (pid %d), opened %s ago\n", d.ID, d.Owner, d.Owner.PID, time.Since(d.Created).Round(time.Second))
	w := printers.GetNewTabWriter(o.Out)
	fmt.Fprintln(w, "\n#\tWHERE\tSTATE\tBY\tWHAT")
	for i, e := range d.Entries {
		where := e.Namespace
		if where == "" {
			where = "(laptop)"
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\n", i+1, where, e.State, e.Owner, e.Text)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for _, g := range d.Graphs {
		fmt.Fprintln(o.Out)
		if err := g.Text(o.Out); err != nil {
			return err
		}
	}
	return nil
}
