// Package graph draws a namespace's microservice graph: its Services, the
// workloads behind them, and the calls their configuration names (other
// Services' cluster names in env values, args and the ConfigMaps they
// read), each call saying where it was found; and on it, what sessions
// altered (an intercepted Service, a mounted workload, a teleport, a local
// process standing in for a Service).
package graph

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"unicode"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-cz/kubectl-cz/intercept"
	"github.com/kubectl-cz/kubectl-cz/session"
)

// APIVersion of the printed objects.
const APIVersion = "kubectl-cz.dev/v1alpha1"

// Graph is one namespace's graph.
type Graph struct {
	APIVersion string    `json:"apiVersion"`
	Kind       string    `json:"kind"`
	Namespace  string    `json:"namespace"`
	Services   []Service `json:"services"`
	// Workloads that no Service selects (callers only).
	Workloads []string `json:"workloads,omitempty"`
	Calls     []Call   `json:"calls"`
	// Teleported lists the sessions that teleport the namespace to this machine.
	Teleported []Mark `json:"teleported,omitempty"`
	// Local lists the local processes of sessions that stand in for no Service.
	Local []Mark `json:"local,omitempty"`

	kube  kubernetes.Interface
	works []workload
}

// Service is a node.
type Service struct {
	Name      string   `json:"name"`
	Ports     []string `json:"ports"`
	Workloads []string `json:"workloads"`
	// Marks are what sessions did to it: intercepted, developer, member,
	// mounted, standin.
	Marks []Mark `json:"alterations,omitempty"`
}

// Call is an edge: From's configuration names To.
type Call struct {
	From  string   `json:"from"`
	To    string   `json:"to"`
	Where []string `json:"where"`
}

// Mark is one session's alteration drawn on the graph.
type Mark struct {
	Session string `json:"session"`
	Owner   string `json:"owner"`
	Role    string `json:"role"`
	Text    string `json:"text"`
	Short   string `json:"-"`
}

// workload is a Deployment or StatefulSet, read once.
type workload struct {
	ref      string // deployment/core
	selector labels.Selector
	template *corev1.PodTemplateSpec
}

// Build reads the namespace's Services, Deployments, StatefulSets and the
// ConfigMaps they use, and draws the calls.
func Build(ctx context.Context, kube kubernetes.Interface, ns string) (*Graph, error) {
	g := &Graph{APIVersion: APIVersion, Kind: "ServiceGraph", Namespace: ns, Services: []Service{}, Calls: []Call{}}
	svcs, err := kube.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, readError("services", ns, err)
	}
	var works []workload
	deps, err := kube.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, readError("deployments", ns, err)
	}
	for i := range deps.Items {
		d := &deps.Items[i]
		if d.Labels[session.LabelManagedBy] == session.ManagedBy {
			continue // an interceptor: drawn as its Service's mark
		}
		works = append(works, newWorkload("deployment/"+d.Name, d.Spec.Selector, &d.Spec.Template))
	}
	sets, err := kube.AppsV1().StatefulSets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, readError("statefulsets", ns, err)
	}
	for i := range sets.Items {
		s := &sets.Items[i]
		works = append(works, newWorkload("statefulset/"+s.Name, s.Spec.Selector, &s.Spec.Template))
	}
	sort.Slice(works, func(i, j int) bool { return works[i].ref < works[j].ref })
	cms := map[string]map[string]string{}
	if list, err := kube.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{}); err == nil {
		for _, cm := range list.Items {
			cms[cm.Name] = cm.Data
		}
	} // without ConfigMaps, the calls named in env values and args remain

	g.kube, g.works = kube, works
	decoys := map[string]map[string]string{} // Service -> its decoy's selector
	for _, svc := range svcs.Items {
		if svc.Labels[session.LabelManagedBy] == session.ManagedBy && svc.Labels[intercept.LabelInterceptor] != "" {
			decoys[svc.Labels[intercept.LabelInterceptor]] = svc.Spec.Selector
		}
	}
	names := map[string]bool{}
	selected := map[string][]string{} // workload -> Services that select it
	for _, svc := range svcs.Items {
		if svc.Labels[session.LabelManagedBy] == session.ManagedBy {
			continue // our decoys: drawn as marks, not as Services
		}
		names[svc.Name] = true
		node := Service{Name: svc.Name, Ports: []string{}, Workloads: []string{}}
		for _, p := range svc.Spec.Ports {
			node.Ports = append(node.Ports, fmt.Sprintf("%s:%d", portName(p), p.Port))
		}
		orig := originalSelector(svc, decoys)
		sel := labels.SelectorFromSet(orig)
		for _, w := range works {
			if len(orig) > 0 && sel.Matches(labels.Set(w.template.Labels)) {
				node.Workloads = append(node.Workloads, w.ref)
				selected[w.ref] = append(selected[w.ref], svc.Name)
			}
		}
		g.Services = append(g.Services, node)
	}
	sort.Slice(g.Services, func(i, j int) bool { return g.Services[i].Name < g.Services[j].Name })

	calls := map[[2]string][]string{}
	for _, w := range works {
		from := selected[w.ref]
		if len(from) == 0 {
			from = []string{w.ref}
			g.Workloads = append(g.Workloads, w.ref)
		}
		for _, src := range sources(w, cms) {
			for _, to := range References(src.text, names, ns) {
				for _, f := range from {
					if f == to {
						continue
					}
					k := [2]string{f, to}
					calls[k] = appendOnce(calls[k], printable(src.where))
				}
			}
		}
	}
	for k, where := range calls {
		g.Calls = append(g.Calls, Call{From: k[0], To: k[1], Where: where})
	}
	sort.Slice(g.Calls, func(i, j int) bool {
		if g.Calls[i].From != g.Calls[j].From {
			return g.Calls[i].From < g.Calls[j].From
		}
		return g.Calls[i].To < g.Calls[j].To
	})
	return g, nil
}

// originalSelector is what a Service selects when nobody intercepts it: an
// intercepted Service selects the interceptor, and its decoy the original
// pods, so the graph keeps its real workloads.
func originalSelector(svc corev1.Service, decoys map[string]map[string]string) map[string]string {
	if _, intercepted := svc.Spec.Selector[intercept.LabelInterceptor]; intercepted {
		return decoys[svc.Name]
	}
	return svc.Spec.Selector
}

func newWorkload(ref string, sel *metav1.LabelSelector, t *corev1.PodTemplateSpec) workload {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		s = labels.Nothing()
	}
	return workload{ref: ref, selector: s, template: t}
}

func portName(p corev1.ServicePort) string {
	if p.Name != "" {
		return p.Name
	}
	return strings.ToLower(string(p.Protocol))
}

func readError(what, ns string, err error) error {
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("cannot list %s in namespace %s: RBAC refuses it (the graph needs list on services, deployments, statefulsets and configmaps)", what, ns)
	}
	return fmt.Errorf("list %s in namespace %s: %w", what, ns, err)
}

// source is configuration text and where it was found.
type source struct{ text, where string }

// sources are the texts of a workload's configuration that can name other
// Services: env values, command and args of each container, and the
// ConfigMaps it reads through env, envFrom and volumes.
func sources(w workload, cms map[string]map[string]string) []source {
	var out []source
	spec := &w.template.Spec
	cmKeys := func(name, where string) {
		data := cms[name]
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			out = append(out, source{data[k], fmt.Sprintf("%s %s configmap %s key %s", w.ref, where, name, k)})
		}
	}
	containers := append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...)
	for _, c := range containers {
		at := "container " + c.Name
		for _, e := range c.Env {
			switch {
			case e.ValueFrom == nil:
				out = append(out, source{e.Value, fmt.Sprintf("%s %s env %s", w.ref, at, e.Name)})
			case e.ValueFrom.ConfigMapKeyRef != nil:
				ref := e.ValueFrom.ConfigMapKeyRef
				out = append(out, source{cms[ref.Name][ref.Key], fmt.Sprintf("%s %s env %s (configmap %s key %s)", w.ref, at, e.Name, ref.Name, ref.Key)})
			}
		}
		for _, ef := range c.EnvFrom {
			if ef.ConfigMapRef != nil {
				cmKeys(ef.ConfigMapRef.Name, at+" envFrom")
			}
		}
		if len(c.Command) > 0 {
			out = append(out, source{strings.Join(c.Command, " "), fmt.Sprintf("%s %s command", w.ref, at)})
		}
		if len(c.Args) > 0 {
			out = append(out, source{strings.Join(c.Args, " "), fmt.Sprintf("%s %s args", w.ref, at)})
		}
	}
	for _, v := range spec.Volumes {
		if v.ConfigMap != nil {
			cmKeys(v.ConfigMap.Name, "volume "+v.Name)
		}
	}
	return out
}

var hostToken = regexp.MustCompile(`[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*`)

// References are the Services of namespace ns (names) that text names as
// a host: a qualified name (svc.ns, svc.ns.svc, svc.ns.svc.cluster.local),
// or a bare name where a host stands (after "//" or "@", before ":PORT",
// or the whole value). A bare word elsewhere ("data" in a path) is not a
// call.
func References(text string, names map[string]bool, ns string) []string {
	lower := strings.ToLower(text)
	var out []string
	for _, m := range hostToken.FindAllStringIndex(lower, -1) {
		tok := lower[m[0]:m[1]]
		name := tok
		if i := strings.IndexByte(tok, '.'); i >= 0 {
			name = tok[:i]
			rest := strings.TrimSuffix(strings.TrimSuffix(tok[i+1:], ".svc.cluster.local"), ".svc")
			if rest != ns || !names[name] {
				continue
			}
			out = appendOnce(out, name)
			continue
		}
		if !names[name] {
			continue
		}
		before, after := lower[:m[0]], lower[m[1]:]
		hostish := strings.HasSuffix(before, "//") || strings.HasSuffix(before, "@") ||
			(len(after) > 1 && after[0] == ':' && after[1] >= '0' && after[1] <= '9') ||
			strings.TrimSpace(lower) == tok
		if hostish {
			out = appendOnce(out, name)
		}
	}
	return out
}

// printable keeps a cluster's strings (env names, ConfigMap keys) from
// putting control characters on a terminal or into a picture.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '?'
		}
		return r
	}, s)
}

func appendOnce(list []string, s string) []string {
	for _, have := range list {
		if have == s {
			return list
		}
	}
	return append(list, s)
}

// Altered is a session's alterations, to draw on graphs.
type Altered struct {
	Session     string
	Owner       string
	Alterations []session.Alteration
}

// Decorate draws sessions' alterations of g's namespace on it.
func (g *Graph) Decorate(ctx context.Context, sessions []Altered) {
	for _, s := range sessions {
		for _, a := range s.Alterations {
			if !concerns(a, g.Namespace) || a.Role == "" {
				continue
			}
			m := Mark{Session: s.Session, Owner: s.Owner, Role: a.Role, Text: a.Text, Short: a.Short}
			if m.Short == "" {
				m.Short = a.Text
			}
			switch {
			case a.Role == "teleported":
				g.Teleported = append(g.Teleported, m)
			case a.Service != "":
				g.mark(a.Service, m)
			case a.Role == "mounted" && strings.HasPrefix(a.Workload, "pod/"):
				w := g.workloadOf(ctx, strings.TrimPrefix(a.Workload, "pod/"))
				for i := range g.Services {
					if w != "" && contains(g.Services[i].Workloads, w) {
						m.Text += " (" + w + ")"
						g.Services[i].Marks = append(g.Services[i].Marks, m)
					}
				}
			case a.Role == "local":
				g.Local = append(g.Local, m)
			}
		}
	}
}

func (g *Graph) mark(service string, m Mark) {
	for i := range g.Services {
		if g.Services[i].Name == service {
			g.Services[i].Marks = append(g.Services[i].Marks, m)
		}
	}
}

func concerns(a session.Alteration, ns string) bool {
	return len(a.Namespaces) == 0 || contains(a.Namespaces, ns)
}

func contains(list []string, s string) bool {
	for _, have := range list {
		if have == s {
			return true
		}
	}
	return false
}

// workloadOf is the workload a pod belongs to, by the workloads' selectors.
func (g *Graph) workloadOf(ctx context.Context, pod string) string {
	p, err := g.kube.CoreV1().Pods(g.Namespace).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		return ""
	}
	for _, w := range g.works {
		if w.selector.Matches(labels.Set(p.Labels)) {
			return w.ref
		}
	}
	return ""
}
