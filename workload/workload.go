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
	"k8s.io/kubectl/pkg/cmd/util/podcmd"
	"k8s.io/kubectl/pkg/util/podutils"

	"github.com/kubectl-cz/kubectl-cz/containerenv"
)

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
// choice: kubectl's own rules and words (podcmd), as kubectl exec and logs.
func PickContainer(errOut io.Writer, src containerenv.Source, requested string) (string, error) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: src.Namespace, Annotations: src.Annotations}, Spec: *src.Spec}
	// Ephemeral containers (a mount's file servers among them) run no
	// workload: not candidates, and not worth naming in the choice.
	pod.Spec.EphemeralContainers = nil
	if src.Pod != nil {
		pod.Name = src.Pod.Name
	}
	c, err := podcmd.FindOrDefaultContainerByName(pod, requested, false, errOut)
	if err != nil {
		return "", err
	}
	return c.Name, nil
}

// bestPod is the pod kubectl exec would pick (podutils.ActivePods: ready
// and running longest first), preferring one that is not going away; nil
// when none runs.
func bestPod(pods []corev1.Pod) *corev1.Pod {
	var staying, leaving []*corev1.Pod
	for i := range pods {
		switch p := &pods[i]; {
		case p.Status.Phase != corev1.PodRunning:
		case p.DeletionTimestamp == nil:
			staying = append(staying, p)
		default:
			leaving = append(leaving, p)
		}
	}
	for _, set := range [][]*corev1.Pod{staying, leaving} {
		if len(set) > 0 {
			sort.Sort(sort.Reverse(podutils.ActivePods(set)))
			return set[0]
		}
	}
	return nil
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
