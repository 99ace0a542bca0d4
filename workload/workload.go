// Package workload finds what users name on the command line or in an
// environment file: a deployment, statefulset or pod by KIND NAME or
// KIND/NAME, one of its running pods, and the container meant.
package workload

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-cz/kubectl-cz/containerenv"
)

// defaultContainerAnnotation is kubectl's way of naming a pod's main container.
const defaultContainerAnnotation = "kubectl.kubernetes.io/default-container"

// Kinds are the canonical kinds, in the order help and completion list them.
var Kinds = []string{"deployment", "statefulset", "pod"}

// Ref names a workload.
type Ref struct{ Kind, Name string }

func (r Ref) String() string { return r.Kind + "/" + r.Name }

// Kind is the canonical name of what users may type for a kind, as kubectl
// accepts it (deployment, deployments, deploy, ...).
func Kind(s string) (string, bool) {
	switch strings.ToLower(s) {
	case "deployment", "deployments", "deploy", "deployment.apps":
		return "deployment", true
	case "statefulset", "statefulsets", "sts", "statefulset.apps":
		return "statefulset", true
	case "pod", "pods", "po":
		return "pod", true
	}
	return "", false
}

// SplitArgs turns a leading KIND/NAME argument into KIND NAME, as kubectl
// takes both forms.
func SplitArgs(args []string) []string {
	if len(args) > 0 {
		if kind, name, ok := strings.Cut(args[0], "/"); ok {
			return append([]string{kind, name}, args[1:]...)
		}
	}
	return args
}

// Parse reads KIND/NAME.
func Parse(s string) (Ref, error) {
	kind, name, ok := strings.Cut(s, "/")
	if !ok || name == "" {
		return Ref{}, fmt.Errorf("%q: want KIND/NAME, e.g. deployment/core", s)
	}
	return New(kind, name)
}

// New checks a kind and a name.
func New(kind, name string) (Ref, error) {
	k, ok := Kind(kind)
	if !ok {
		return Ref{}, fmt.Errorf("%q is not a workload kind: want deployment, statefulset or pod", kind)
	}
	if name == "" || strings.Contains(name, "/") {
		return Ref{}, fmt.Errorf("%q is not a workload name", name)
	}
	return Ref{Kind: k, Name: name}, nil
}

// Lookup reads a workload and picks one of its running pods, for the
// fields only a pod has (nil Pod when none runs).
func Lookup(ctx context.Context, kube kubernetes.Interface, ns string, r Ref) (containerenv.Source, error) {
	src := containerenv.Source{Namespace: ns}
	var selector *metav1.LabelSelector
	var err error
	switch r.Kind {
	case "pod":
		var pod *corev1.Pod
		if pod, err = kube.CoreV1().Pods(ns).Get(ctx, r.Name, metav1.GetOptions{}); err == nil {
			src.Spec, src.Labels, src.Annotations, src.Pod = &pod.Spec, pod.Labels, pod.Annotations, pod
			return src, nil
		}
	case "deployment":
		d, e := kube.AppsV1().Deployments(ns).Get(ctx, r.Name, metav1.GetOptions{})
		if err = e; err == nil {
			src.Spec, src.Labels, src.Annotations, selector = &d.Spec.Template.Spec, d.Spec.Template.Labels, d.Spec.Template.Annotations, d.Spec.Selector
		}
	case "statefulset":
		s, e := kube.AppsV1().StatefulSets(ns).Get(ctx, r.Name, metav1.GetOptions{})
		if err = e; err == nil {
			src.Spec, src.Labels, src.Annotations, selector = &s.Spec.Template.Spec, s.Spec.Template.Labels, s.Spec.Template.Annotations, s.Spec.Selector
		}
	default:
		return src, fmt.Errorf("%q is not a workload kind", r.Kind)
	}
	switch {
	case apierrors.IsNotFound(err):
		return src, fmt.Errorf("%s %q not found in namespace %q", r.Kind, r.Name, ns)
	case apierrors.IsForbidden(err):
		return src, fmt.Errorf("cannot read %s %q in namespace %q: RBAC refuses it", r.Kind, r.Name, ns)
	case err != nil:
		return src, fmt.Errorf("read %s %q: %w", r.Kind, r.Name, err)
	}
	sel, err := metav1.LabelSelectorAsSelector(selector)
	if err != nil {
		return src, fmt.Errorf("%s %q has a selector kubectl-cz cannot read: %w", r.Kind, r.Name, err)
	}
	pods, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		if apierrors.IsForbidden(err) {
			return src, fmt.Errorf("cannot list pods in namespace %q: RBAC refuses it", ns)
		}
		return src, fmt.Errorf("list the pods of %s %q: %w", r.Kind, r.Name, err)
	}
	src.Pod = bestPod(pods.Items)
	return src, nil
}

// PickContainer is the requested container, else the default-container
// annotation, else the first container, said on errOut when there was a
// choice (as kubectl exec does). A requested container that the pod does
// not have is an error naming those it has.
func PickContainer(errOut io.Writer, src containerenv.Source, requested string) (string, error) {
	var names []string
	for _, c := range src.Spec.Containers {
		names = append(names, c.Name)
	}
	if len(names) == 0 {
		return "", fmt.Errorf("the pod spec has no containers")
	}
	if requested != "" {
		for _, n := range names {
			if n == requested {
				return requested, nil
			}
		}
		return "", fmt.Errorf("no container %q: the pod has %s", requested, strings.Join(names, ", "))
	}
	if def := src.Annotations[defaultContainerAnnotation]; def != "" {
		return def, nil
	}
	if len(names) > 1 {
		fmt.Fprintf(errOut, "Defaulted container %q out of: %s\n", names[0], strings.Join(names, ", "))
	}
	return names[0], nil
}

// bestPod prefers a ready pod that is not going away, then the newest; nil
// when none runs.
func bestPod(pods []corev1.Pod) *corev1.Pod {
	score := func(p *corev1.Pod) int {
		s := 0
		if p.DeletionTimestamp == nil {
			s += 4
		}
		if p.Status.Phase == corev1.PodRunning {
			s += 2
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				s++
			}
		}
		return s
	}
	sort.SliceStable(pods, func(i, j int) bool {
		si, sj := score(&pods[i]), score(&pods[j])
		if si != sj {
			return si > sj
		}
		return pods[j].CreationTimestamp.Before(&pods[i].CreationTimestamp)
	})
	if len(pods) == 0 || pods[0].Status.Phase != corev1.PodRunning {
		return nil
	}
	return &pods[0]
}

// Names lists the workloads of a kind, for shell completion.
func Names(ctx context.Context, kube kubernetes.Interface, ns, kind string) ([]string, error) {
	kind, _ = Kind(kind)
	var names []string
	switch kind {
	case "deployment":
		l, err := kube.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		for _, d := range l.Items {
			names = append(names, d.Name)
		}
	case "statefulset":
		l, err := kube.AppsV1().StatefulSets(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		for _, s := range l.Items {
			names = append(names, s.Name)
		}
	case "pod":
		l, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		for _, p := range l.Items {
			names = append(names, p.Name)
		}
	}
	return names, nil
}
