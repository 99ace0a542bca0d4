package graph

import (
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
	"text/tabwriter"
)

// Formats are the ways a graph prints (besides -o json and -o yaml, which
// print the object).
var Formats = []string{"text", "dot", "mermaid"}

// roleWords say a mark's role in text.
var roleWords = map[string]string{
	"intercepted": "intercepted",
	"developer":   "developer",
	"member":      "environment",
	"mounted":     "mounted",
	"standin":     "stand-in",
	"teleported":  "teleported",
	"local":       "local process",
}

// Text writes the graph for a terminal: one line per Service, its calls
// and alterations under it.
func (g *Graph) Text(w io.Writer) error {
	fmt.Fprintf(w, "namespace %s: %d services, %d calls\n", g.Namespace, len(g.Services), len(g.Calls))
	for _, m := range g.Teleported {
		fmt.Fprintf(w, "  teleported: %s (session %s, %s)\n", m.Text, m.Session, m.Owner)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nSERVICE\tWORKLOADS\tCALLS\tPORTS")
	for _, s := range g.Services {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Name, orNone(strings.Join(s.Workloads, ", ")), orNone(strings.Join(g.callees(s.Name), ", ")), strings.Join(s.Ports, ", "))
	}
	for _, wl := range g.Workloads {
		fmt.Fprintf(tw, "(%s)\t%s\t%s\t\n", wl, wl, orNone(strings.Join(g.callees(wl), ", ")))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(g.Calls) > 0 {
		fmt.Fprintln(w, "\ncalls, and where the configuration names them:")
		for _, c := range g.Calls {
			fmt.Fprintf(w, "  %s -> %s\n", c.From, c.To)
			for _, where := range c.Where {
				fmt.Fprintf(w, "      %s\n", where)
			}
		}
	}
	var altered []string
	for _, s := range g.Services {
		for _, m := range s.Marks {
			altered = append(altered, fmt.Sprintf("  %s: %s: %s (session %s, %s)", s.Name, roleWords[m.Role], m.Text, m.Session, m.Owner))
		}
	}
	for _, m := range g.Local {
		altered = append(altered, fmt.Sprintf("  this machine: %s (session %s, %s)", m.Text, m.Session, m.Owner))
	}
	if len(altered) > 0 {
		fmt.Fprintln(w, "\naltered by sessions:")
		for _, line := range altered {
			fmt.Fprintln(w, line)
		}
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

func (g *Graph) callees(from string) []string {
	var out []string
	for _, c := range g.Calls {
		if c.From == from {
			out = append(out, c.To)
		}
	}
	return out
}

// fill colours a Service by its strongest alteration.
func fill(s Service) string {
	roles := map[string]bool{}
	for _, m := range s.Marks {
		roles[m.Role] = true
	}
	switch {
	case roles["intercepted"] || roles["developer"] || roles["standin"]:
		return "#ffd8a8" // its requests (some) reach a laptop
	case roles["mounted"]:
		return "#d0ebff"
	}
	return ""
}

func (g *Graph) label(s Service) []string {
	lines := []string{s.Name}
	if len(s.Workloads) > 0 {
		lines = append(lines, strings.Join(s.Workloads, ", "))
	}
	for _, m := range s.Marks {
		if m.Role == "intercepted" {
			lines = append(lines, "intercepted ("+m.Session+")")
		} else if m.Role == "mounted" {
			lines = append(lines, "mounted ("+m.Session+")")
		}
	}
	return lines
}

// laptops are the laptop-side nodes: developers' rules and stand-ins,
// per Service, with the edge label that takes traffic there.
type laptopEdge struct{ service, node, label string }

func (g *Graph) laptopEdges() []laptopEdge {
	var out []laptopEdge
	for _, s := range g.Services {
		for _, m := range s.Marks {
			switch m.Role {
			case "developer":
				out = append(out, laptopEdge{s.Name, m.Short, "intercept"})
			case "standin":
				out = append(out, laptopEdge{s.Name, m.Short, "stands in"})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].node < out[j].node })
	return out
}

func dotQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s) + `"`
}

// DOT writes the graph in Graphviz's language.
func (g *Graph) DOT(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "digraph %s {\n", dotQuote(g.Namespace))
	b.WriteString("  rankdir=LR;\n  node [shape=box, style=\"rounded,filled\", fillcolor=\"#ffffff\", fontname=\"Helvetica\"];\n  edge [fontname=\"Helvetica\", fontsize=10];\n")
	title := "namespace " + g.Namespace
	for _, m := range g.Teleported {
		title += "\nteleported to " + m.Owner + " (" + m.Session + ")"
	}
	fmt.Fprintf(&b, "  label=%s; labelloc=t;\n", dotQuote(title))
	for _, s := range g.Services {
		attrs := "label=" + dotQuote(strings.Join(g.label(s), "\n"))
		if f := fill(s); f != "" {
			attrs += ", fillcolor=" + dotQuote(f)
		}
		fmt.Fprintf(&b, "  %s [%s];\n", dotQuote("svc/"+s.Name), attrs)
	}
	for _, wl := range g.Workloads {
		fmt.Fprintf(&b, "  %s [label=%s, shape=ellipse];\n", dotQuote(wl), dotQuote(wl))
	}
	for _, c := range g.Calls {
		fmt.Fprintf(&b, "  %s -> %s [label=%s];\n", dotQuote(g.nodeID(c.From)), dotQuote(g.nodeID(c.To)), dotQuote(shortWhere(c.Where)))
	}
	for i, e := range g.laptopEdges() {
		id := fmt.Sprintf("laptop/%d", i)
		fmt.Fprintf(&b, "  %s [label=%s, shape=component, fillcolor=\"#fff3bf\"];\n", dotQuote(id), dotQuote(e.node))
		fmt.Fprintf(&b, "  %s -> %s [style=dashed, label=%s];\n", dotQuote("svc/"+e.service), dotQuote(id), dotQuote(e.label))
	}
	for i, m := range g.Local {
		fmt.Fprintf(&b, "  %s [label=%s, shape=component, fillcolor=\"#fff3bf\"];\n", dotQuote(fmt.Sprintf("local/%d", i)), dotQuote(m.Short))
	}
	b.WriteString("}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func (g *Graph) nodeID(name string) string {
	if strings.Contains(name, "/") {
		return name // a workload no Service selects
	}
	return "svc/" + name
}

// shortWhere labels an edge with where the call is named, without the
// workload (the edge's tail says it).
func shortWhere(where []string) string {
	var parts []string
	for _, w := range where {
		if _, rest, ok := strings.Cut(w, " "); ok {
			w = rest
		}
		parts = append(parts, w)
	}
	return strings.Join(parts, "\n")
}

var mermaidUnsafe = regexp.MustCompile(`[^A-Za-z0-9_]`)

func mermaidID(s string) string { return "n_" + mermaidUnsafe.ReplaceAllString(s, "_") }

func mermaidText(s string) string {
	return `"` + strings.NewReplacer(`"`, "#quot;", "\n", "<br/>", "<", "#lt;", ">", "#gt;", "|", "#124;").Replace(s) + `"`
}

// Mermaid writes the graph as a Mermaid flowchart (GitHub renders it).
func (g *Graph) Mermaid(w io.Writer) error {
	var b strings.Builder
	b.WriteString("flowchart LR\n")
	fmt.Fprintf(&b, "  %%%% namespace %s\n", g.Namespace)
	for _, m := range g.Teleported {
		fmt.Fprintf(&b, "  %%%% teleported to %s (session %s)\n", m.Owner, m.Session)
	}
	classes := map[string][]string{}
	for _, s := range g.Services {
		id := mermaidID("svc/" + s.Name)
		fmt.Fprintf(&b, "  %s[%s]\n", id, mermaidText(strings.Join(g.label(s), "\n")))
		switch fill(s) {
		case "#ffd8a8":
			classes["intercepted"] = append(classes["intercepted"], id)
		case "#d0ebff":
			classes["mounted"] = append(classes["mounted"], id)
		}
	}
	for _, wl := range g.Workloads {
		fmt.Fprintf(&b, "  %s([%s])\n", mermaidID(wl), mermaidText(wl))
	}
	for _, c := range g.Calls {
		fmt.Fprintf(&b, "  %s -->|%s| %s\n", mermaidID(g.nodeID(c.From)), mermaidText(shortWhere(c.Where)), mermaidID(g.nodeID(c.To)))
	}
	for i, e := range g.laptopEdges() {
		id := fmt.Sprintf("laptop_%d", i)
		fmt.Fprintf(&b, "  %s[[%s]]\n", id, mermaidText(e.node))
		fmt.Fprintf(&b, "  %s -.->|%s| %s\n", mermaidID("svc/"+e.service), mermaidText(e.label), id)
		classes["laptop"] = append(classes["laptop"], id)
	}
	for i, m := range g.Local {
		id := fmt.Sprintf("local_%d", i)
		fmt.Fprintf(&b, "  %s[[%s]]\n", id, mermaidText(m.Short))
		classes["laptop"] = append(classes["laptop"], id)
	}
	for _, c := range []struct{ name, style string }{{"intercepted", "fill:#ffd8a8"}, {"mounted", "fill:#d0ebff"}, {"laptop", "fill:#fff3bf"}} {
		if ids := classes[c.name]; len(ids) > 0 {
			fmt.Fprintf(&b, "  classDef %s %s\n  class %s %s\n", c.name, c.style, strings.Join(ids, ","), c.name)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
