// Package containerenv computes the environment a workload's container gets
// from the kubelet (env, envFrom ConfigMaps and Secrets, field and resource
// references, $(VAR) expansion, Service links), so a process on the laptop
// can run with it: `kubectl cz env`, and the env file of a workload
// teleport.
package containerenv

import (
	"context"
	"fmt"
	"math"
	"net"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Source is the container whose environment is wanted.
type Source struct {
	Namespace string
	// Spec is the pod spec new pods get (a workload's template, or the pod's).
	Spec *corev1.PodSpec
	// Labels and Annotations of the pod template, for metadata field
	// references when there is no pod.
	Labels, Annotations map[string]string
	// Pod is a running pod of the workload, for field references to it
	// (name, IPs, node); nil when none runs.
	Pod       *corev1.Pod
	Container string
}

// Var is one variable of the environment and where its value came from.
type Var struct {
	Name   string `json:"name"`
	Value  string `json:"value"`
	Source string `json:"source"`
}

// Result is a resolved environment in a stable order: envFrom and env in
// the order the kubelet applies them (a later definition replaces the value
// of an earlier one in place), then Service links by name.
type Result struct {
	Vars []Var
	// Warnings are values that could not be known from the laptop (a field
	// of a pod that does not run), said to the user on stderr.
	Warnings []string
}

// Resolve reads the ConfigMaps, Secrets and Services the container's
// environment refers to, as the kubelet does when it starts the container.
func Resolve(ctx context.Context, kube kubernetes.Interface, src Source) (*Result, error) {
	c := findContainer(src.Spec, src.Container)
	if c == nil {
		return nil, fmt.Errorf("no container %q (containers: %s)", src.Container, strings.Join(containerNames(src.Spec), ", "))
	}
	r := &resolver{ctx: ctx, kube: kube, src: src, c: c, cms: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{}}
	return r.resolve()
}

type resolver struct {
	ctx     context.Context
	kube    kubernetes.Interface
	src     Source
	c       *corev1.Container
	cms     map[string]*corev1.ConfigMap
	secrets map[string]*corev1.Secret
	missing map[string]bool // objects known not to exist

	vars  []Var
	index map[string]int
	warn  []string
}

func (r *resolver) set(name, value, source string) {
	if i, ok := r.index[name]; ok {
		r.vars[i] = Var{Name: name, Value: value, Source: source}
		return
	}
	r.index[name] = len(r.vars)
	r.vars = append(r.vars, Var{Name: name, Value: value, Source: source})
}

func (r *resolver) lookup(name string) (string, bool) {
	if i, ok := r.index[name]; ok {
		return r.vars[i].Value, true
	}
	return "", false
}

func (r *resolver) resolve() (*Result, error) {
	r.index = map[string]int{}
	r.missing = map[string]bool{}
	links, err := r.serviceLinks()
	if err != nil {
		return nil, err
	}
	for _, from := range r.c.EnvFrom {
		if err := r.envFrom(from); err != nil {
			return nil, err
		}
	}
	linkValue := map[string]string{}
	for _, v := range links {
		linkValue[v.Name] = v.Value
	}
	for _, e := range r.c.Env {
		value, source, ok, err := r.envValue(e, linkValue)
		if err != nil {
			return nil, fmt.Errorf("env %s of container %s: %w", e.Name, r.c.Name, err)
		}
		if ok {
			r.set(e.Name, value, source)
		}
	}
	sort.Slice(links, func(i, j int) bool { return links[i].Name < links[j].Name })
	for _, v := range links {
		if _, defined := r.index[v.Name]; !defined {
			r.set(v.Name, v.Value, v.Source)
		}
	}
	return &Result{Vars: r.vars, Warnings: r.warn}, nil
}

func (r *resolver) envFrom(from corev1.EnvFromSource) error {
	var data map[string]string
	var what string
	var optional bool
	switch {
	case from.ConfigMapRef != nil:
		optional = from.ConfigMapRef.Optional != nil && *from.ConfigMapRef.Optional
		what = "configmap/" + from.ConfigMapRef.Name
		cm, err := r.configMap(from.ConfigMapRef.Name)
		if err != nil {
			if apierrors.IsNotFound(err) && optional {
				return nil
			}
			return fmt.Errorf("envFrom of container %s: %w", r.c.Name, err)
		}
		data = cm.Data
	case from.SecretRef != nil:
		optional = from.SecretRef.Optional != nil && *from.SecretRef.Optional
		what = "secret/" + from.SecretRef.Name
		s, err := r.secret(from.SecretRef.Name)
		if err != nil {
			if apierrors.IsNotFound(err) && optional {
				return nil
			}
			return fmt.Errorf("envFrom of container %s: %w", r.c.Name, err)
		}
		data = map[string]string{}
		for k, v := range s.Data {
			data[k] = string(v)
		}
	default:
		return nil
	}
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		// Every key, as the kubelet does, even one that is not a valid name.
		r.set(from.Prefix+k, data[k], what)
	}
	return nil
}

// envValue is one env entry's value; ok false: the kubelet leaves the
// variable out (an optional reference to something missing).
func (r *resolver) envValue(e corev1.EnvVar, links map[string]string) (value, source string, ok bool, err error) {
	if e.Value != "" || e.ValueFrom == nil {
		return expand(e.Value, func(name string) (string, bool) {
			if v, ok := r.lookup(name); ok {
				return v, true
			}
			v, ok := links[name]
			return v, ok
		}), "env", true, nil
	}
	from := e.ValueFrom
	switch {
	case from.FieldRef != nil:
		v, err := r.field(from.FieldRef.FieldPath)
		return v, "field " + from.FieldRef.FieldPath, err == nil, err
	case from.ResourceFieldRef != nil:
		v, err := r.resourceField(from.ResourceFieldRef)
		return v, "resource " + from.ResourceFieldRef.Resource, err == nil, err
	case from.ConfigMapKeyRef != nil:
		ref := from.ConfigMapKeyRef
		optional := ref.Optional != nil && *ref.Optional
		cm, err := r.configMap(ref.Name)
		if err != nil {
			if apierrors.IsNotFound(err) && optional {
				return "", "", false, nil
			}
			return "", "", false, err
		}
		v, found := cm.Data[ref.Key]
		if !found {
			if optional {
				return "", "", false, nil
			}
			return "", "", false, fmt.Errorf("configmap %q has no key %q", ref.Name, ref.Key)
		}
		return v, "configmap/" + ref.Name, true, nil
	case from.SecretKeyRef != nil:
		ref := from.SecretKeyRef
		optional := ref.Optional != nil && *ref.Optional
		s, err := r.secret(ref.Name)
		if err != nil {
			if apierrors.IsNotFound(err) && optional {
				return "", "", false, nil
			}
			return "", "", false, err
		}
		v, found := s.Data[ref.Key]
		if !found {
			if optional {
				return "", "", false, nil
			}
			return "", "", false, fmt.Errorf("secret %q has no key %q", ref.Name, ref.Key)
		}
		return string(v), "secret/" + ref.Name, true, nil
	}
	r.warn = append(r.warn, fmt.Sprintf("%s: a kind of valueFrom this version does not know; left out", e.Name))
	return "", "", false, nil
}

func (r *resolver) configMap(name string) (*corev1.ConfigMap, error) {
	if cm, ok := r.cms[name]; ok {
		return cm, nil
	}
	key := "configmap/" + name
	if r.missing[key] {
		return nil, apierrors.NewNotFound(corev1.Resource("configmaps"), name)
	}
	cm, err := r.kube.CoreV1().ConfigMaps(r.src.Namespace).Get(r.ctx, name, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			r.missing[key] = true
		}
		return nil, readError(err, "configmap", name, r.src.Namespace)
	}
	r.cms[name] = cm
	return cm, nil
}

func (r *resolver) secret(name string) (*corev1.Secret, error) {
	if s, ok := r.secrets[name]; ok {
		return s, nil
	}
	key := "secret/" + name
	if r.missing[key] {
		return nil, apierrors.NewNotFound(corev1.Resource("secrets"), name)
	}
	s, err := r.kube.CoreV1().Secrets(r.src.Namespace).Get(r.ctx, name, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			r.missing[key] = true
		}
		return nil, readError(err, "secret", name, r.src.Namespace)
	}
	r.secrets[name] = s
	return s, nil
}

// readError says which object could not be read and, when RBAC refused,
// what right is missing; NotFound stays recognisable for optional refs.
func readError(err error, kind, name, ns string) error {
	switch {
	case apierrors.IsNotFound(err):
		return &notFound{err: err, msg: fmt.Sprintf("%s %q not found in namespace %q", kind, name, ns)}
	case apierrors.IsForbidden(err):
		return fmt.Errorf("cannot read %s %q in namespace %q: RBAC refuses it (the environment needs get on %ss)", kind, name, ns, kind)
	}
	return fmt.Errorf("read %s %q: %w", kind, name, err)
}

type notFound struct {
	err error
	msg string
}

func (e *notFound) Error() string { return e.msg }
func (e *notFound) Unwrap() error { return e.err }

// field is the value of a fieldRef, from the running pod when there is one.
func (r *resolver) field(path string) (string, error) {
	pod := r.src.Pod
	labels, annotations := r.src.Labels, r.src.Annotations
	if pod != nil {
		labels, annotations = pod.Labels, pod.Annotations
	}
	if key, ok := subscript(path, "metadata.labels"); ok {
		return labels[key], nil
	}
	if key, ok := subscript(path, "metadata.annotations"); ok {
		return annotations[key], nil
	}
	switch path {
	case "metadata.namespace":
		return r.src.Namespace, nil
	case "metadata.labels":
		return formatMap(labels), nil
	case "metadata.annotations":
		return formatMap(annotations), nil
	case "spec.serviceAccountName":
		if pod != nil {
			return pod.Spec.ServiceAccountName, nil
		}
		if r.src.Spec.ServiceAccountName == "" {
			return "default", nil
		}
		return r.src.Spec.ServiceAccountName, nil
	}
	if pod == nil {
		r.warn = append(r.warn, fmt.Sprintf("%s is a field of a running pod and none runs: set to empty", path))
		return "", nil
	}
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "status.hostIP":
		return pod.Status.HostIP, nil
	case "status.hostIPs":
		var ips []string
		for _, ip := range pod.Status.HostIPs {
			ips = append(ips, ip.IP)
		}
		return strings.Join(ips, ","), nil
	case "status.podIP":
		return pod.Status.PodIP, nil
	case "status.podIPs":
		var ips []string
		for _, ip := range pod.Status.PodIPs {
			ips = append(ips, ip.IP)
		}
		return strings.Join(ips, ","), nil
	}
	return "", fmt.Errorf("unsupported field %q", path)
}

// subscript parses metadata.labels['key'].
func subscript(path, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(path, prefix+"['")
	if !ok || !strings.HasSuffix(rest, "']") {
		return "", false
	}
	return strings.TrimSuffix(rest, "']"), true
}

// formatMap is the kubelet's form of a whole labels or annotations map:
// key="value" lines, sorted, with no newline at the end.
func formatMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%q\n", k, m[k])
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// resourceField is a resourceFieldRef's value, from the running pod's
// container when there is one (the API server has defaulted its requests).
// Without a limit the kubelet gives the node's allocatable amount.
func (r *resolver) resourceField(ref *corev1.ResourceFieldSelector) (string, error) {
	name := r.c.Name
	if ref.ContainerName != "" {
		name = ref.ContainerName
	}
	spec := r.src.Spec
	if r.src.Pod != nil {
		spec = &r.src.Pod.Spec
	}
	c := findContainer(spec, name)
	if c == nil {
		return "", fmt.Errorf("resourceFieldRef names no container %q", name)
	}
	kind, resName, ok := strings.Cut(ref.Resource, ".")
	if !ok || (kind != "limits" && kind != "requests") {
		return "", fmt.Errorf("unsupported resource %q", ref.Resource)
	}
	q, set := c.Resources.Limits[corev1.ResourceName(resName)]
	if kind == "requests" {
		// An unset request is the limit (API server defaulting), else 0.
		if req, ok := c.Resources.Requests[corev1.ResourceName(resName)]; ok {
			q = req
		}
	} else if !set {
		alloc, err := r.nodeAllocatable(corev1.ResourceName(resName))
		if err != nil {
			r.warn = append(r.warn, fmt.Sprintf("%s has no limit and the node's allocatable amount is unknown (%v): set to empty", ref.Resource, err))
			return "", nil
		}
		q = alloc
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	if resName == string(corev1.ResourceCPU) {
		return strconv.FormatInt(int64(math.Ceil(float64(q.MilliValue())/float64(divisor.MilliValue()))), 10), nil
	}
	return strconv.FormatInt(int64(math.Ceil(float64(q.Value())/float64(divisor.Value()))), 10), nil
}

func (r *resolver) nodeAllocatable(name corev1.ResourceName) (resource.Quantity, error) {
	if r.src.Pod == nil || r.src.Pod.Spec.NodeName == "" {
		return resource.Quantity{}, fmt.Errorf("no running pod")
	}
	node, err := r.kube.CoreV1().Nodes().Get(r.ctx, r.src.Pod.Spec.NodeName, metav1.GetOptions{})
	if err != nil {
		return resource.Quantity{}, err
	}
	q, ok := node.Status.Allocatable[name]
	if !ok {
		return resource.Quantity{}, fmt.Errorf("node %s has no allocatable %s", node.Name, name)
	}
	return q, nil
}

// serviceLinks are the docker-link style variables of Services
// (FOO_SERVICE_HOST, FOO_PORT_80_TCP, ...): those of the pod's namespace
// unless enableServiceLinks is false, and always the API server's.
func (r *resolver) serviceLinks() ([]Var, error) {
	byName := map[string]*corev1.Service{}
	if r.src.Spec.EnableServiceLinks == nil || *r.src.Spec.EnableServiceLinks {
		list, err := r.kube.CoreV1().Services(r.src.Namespace).List(r.ctx, metav1.ListOptions{})
		if err != nil {
			if apierrors.IsForbidden(err) {
				return nil, fmt.Errorf("cannot list services in namespace %q: RBAC refuses it (the environment's service links need list on services)", r.src.Namespace)
			}
			return nil, fmt.Errorf("list services: %w", err)
		}
		for i := range list.Items {
			byName[list.Items[i].Name] = &list.Items[i]
		}
	}
	if _, shadowed := byName["kubernetes"]; !shadowed {
		svc, err := r.kube.CoreV1().Services(metav1.NamespaceDefault).Get(r.ctx, "kubernetes", metav1.GetOptions{})
		switch {
		case err == nil:
			byName["kubernetes"] = svc
		case apierrors.IsForbidden(err):
			r.warn = append(r.warn, "cannot read service default/kubernetes: KUBERNETES_SERVICE_HOST and its kin are left out")
		case !apierrors.IsNotFound(err):
			return nil, fmt.Errorf("read service default/kubernetes: %w", err)
		}
	}
	var vars []Var
	for _, svc := range byName {
		vars = append(vars, linkVars(svc)...)
	}
	return vars, nil
}

func linkVars(svc *corev1.Service) []Var {
	ip := svc.Spec.ClusterIP
	if ip == "" || ip == corev1.ClusterIPNone || len(svc.Spec.Ports) == 0 {
		return nil
	}
	prefix := envName(svc.Name)
	source := "service " + svc.Namespace + "/" + svc.Name
	vars := []Var{
		{prefix + "_SERVICE_HOST", ip, source},
		{prefix + "_SERVICE_PORT", strconv.Itoa(int(svc.Spec.Ports[0].Port)), source},
	}
	for _, p := range svc.Spec.Ports {
		if p.Name != "" {
			vars = append(vars, Var{prefix + "_SERVICE_PORT_" + envName(p.Name), strconv.Itoa(int(p.Port)), source})
		}
	}
	for i, p := range svc.Spec.Ports {
		proto := string(p.Protocol)
		if proto == "" {
			proto = string(corev1.ProtocolTCP)
		}
		url := strings.ToLower(proto) + "://" + net.JoinHostPort(ip, strconv.Itoa(int(p.Port)))
		if i == 0 {
			vars = append(vars, Var{prefix + "_PORT", url, source})
		}
		pp := fmt.Sprintf("%s_PORT_%d_%s", prefix, p.Port, strings.ToUpper(proto))
		vars = append(vars,
			Var{pp, url, source},
			Var{pp + "_PROTO", strings.ToLower(proto), source},
			Var{pp + "_PORT", strconv.Itoa(int(p.Port)), source},
			Var{pp + "_ADDR", ip, source})
	}
	return vars
}

func envName(s string) string { return strings.ToUpper(strings.ReplaceAll(s, "-", "_")) }

// expand replaces $(VAR) with VAR's value where mapping knows it, and $$
// with $, leaving every other $ as it is: the kubelet's rules.
func expand(in string, mapping func(string) (string, bool)) string {
	if !strings.Contains(in, "$") {
		return in
	}
	var b strings.Builder
	for i := 0; i < len(in); i++ {
		if in[i] != '$' || i+1 == len(in) {
			b.WriteByte(in[i])
			continue
		}
		switch in[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(in[i+2:], ')')
			if end < 0 {
				b.WriteString("$(")
				i++
				continue
			}
			name := in[i+2 : i+2+end]
			if v, ok := mapping(name); ok {
				b.WriteString(v)
			} else {
				b.WriteString("$(" + name + ")")
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

func findContainer(spec *corev1.PodSpec, name string) *corev1.Container {
	for i := range spec.Containers {
		if spec.Containers[i].Name == name {
			return &spec.Containers[i]
		}
	}
	for i := range spec.InitContainers {
		if spec.InitContainers[i].Name == name {
			return &spec.InitContainers[i]
		}
	}
	return nil
}

func containerNames(spec *corev1.PodSpec) []string {
	var names []string
	for _, c := range spec.Containers {
		names = append(names, c.Name)
	}
	return names
}
