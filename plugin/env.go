package plugin

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-cz/kubectl-cz/netstack/workloadenv"
)

// defaultContainerAnnotation is kubectl's way of naming a pod's main container.
const defaultContainerAnnotation = "kubectl.kubernetes.io/default-container"

type envOptions struct {
	flags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams

	kind, name string
	container  string
	output     string
}

// NewEnvCommand returns `kubectl cz env`.
func NewEnvCommand(flags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &envOptions{flags: flags, IOStreams: streams}
	cmd := &cobra.Command{
		Use:   "env (deployment|statefulset|pod) NAME [-c CONTAINER] [-o sh|env|docker|json|yaml]",
		Short: "Print the environment a workload's container gets in the cluster",
		Long: `Print the environment the kubelet gives a workload's container, so a local process can run
with it: env and envFrom (ConfigMaps and Secrets, with their prefixes), field and resource
references (taken from a running pod of the workload), $(VAR) expansion, and the Service link
variables (FOO_SERVICE_HOST, FOO_PORT_80_TCP, ...) unless the pod spec turns them off. Variables
the image itself sets (PATH, ...) are not part of it.

Secret values are printed in clear: mind where the output goes. Nothing in the cluster changes.`,
		Example: `  # Load deployment core's environment into this shell
  eval "$(kubectl cz env deployment core)"

  # A .env file for docker compose, an IDE or a dotenv library
  kubectl cz env deploy/core -o env > core.env

  # For docker run --env-file, from the sidecar container of a pod
  kubectl cz env pod core-5d8f7-abcde -c sidecar -o docker > core.docker-env`,
		RunE: func(c *cobra.Command, args []string) error {
			if err := o.complete(c, args); err != nil {
				return err
			}
			return o.run(c.Context())
		},
	}
	cmd.ValidArgsFunction = func(c *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		return completeWorkload(c, flags, args)
	}
	f := cmd.Flags()
	f.StringVarP(&o.container, "container", "c", "", "Container whose environment to print (default: the pod's default container, else its first)")
	f.StringVarP(&o.output, "output", "o", "sh", "Format: "+strings.Join(workloadenv.Formats, ", "))
	_ = cmd.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return workloadenv.Formats, cobra.ShellCompDirectiveNoFileComp
	})
	return cmd
}

// completeWorkload completes "KIND NAME" of a workload; nothing after it.
func completeWorkload(c *cobra.Command, flags *genericclioptions.ConfigFlags, args []string) ([]string, cobra.ShellCompDirective) {
	switch len(args) {
	case 0:
		return []string{"deployment", "statefulset", "pod"}, cobra.ShellCompDirectiveNoFileComp
	case 1:
		a, err := resolveAccess(flags)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		names, _ := workloadNames(c.Context(), a.Kube, a.Namespace, args[0])
		return names, cobra.ShellCompDirectiveNoFileComp
	}
	return nil, cobra.ShellCompDirectiveNoFileComp
}

// workloadKind is the canonical name of what users may type for a kind.
func workloadKind(s string) (string, bool) {
	switch strings.ToLower(s) {
	case "deployment", "deployments", "deploy":
		return "deployment", true
	case "statefulset", "statefulsets", "sts":
		return "statefulset", true
	case "pod", "pods", "po":
		return "pod", true
	}
	return "", false
}

func (o *envOptions) complete(c *cobra.Command, args []string) error {
	if len(args) == 1 {
		if kind, name, ok := strings.Cut(args[0], "/"); ok {
			args = []string{kind, name}
		}
	}
	if len(args) != 2 {
		return usageError(c, "want: kubectl cz env (deployment|statefulset|pod) NAME")
	}
	kind, ok := workloadKind(args[0])
	if !ok {
		return usageError(c, "%q is not a workload kind: want deployment, statefulset or pod", args[0])
	}
	o.kind, o.name = kind, args[1]
	for _, f := range workloadenv.Formats {
		if o.output == f {
			return nil
		}
	}
	return usageError(c, "unknown output format %q: want one of %s", o.output, strings.Join(workloadenv.Formats, ", "))
}

func (o *envOptions) run(ctx context.Context) error {
	a, err := resolveAccess(o.flags)
	if err != nil {
		return err
	}
	src, err := workloadSource(ctx, a.Kube, a.Namespace, o.kind, o.name)
	if err != nil {
		return err
	}
	if src.Container, err = pickContainer(o.ErrOut, src, o.container); err != nil {
		return err
	}
	_, err = renderEnv(ctx, a.Kube, src, o.output, o.Out, o.ErrOut)
	return err
}

// renderEnv resolves a container's environment and writes it in format to
// w, with what could not be known or written said on errOut. It returns
// how many variables there are.
func renderEnv(ctx context.Context, kube kubernetes.Interface, src workloadenv.Source, format string, w, errOut io.Writer) (int, error) {
	res, err := workloadenv.Resolve(ctx, kube, src)
	if err != nil {
		return 0, err
	}
	for _, warning := range res.Warnings {
		fmt.Fprintln(errOut, "warning: "+warning)
	}
	skipped, err := workloadenv.Write(w, res.Vars, format)
	if err != nil {
		return 0, err
	}
	if len(skipped) > 0 {
		fmt.Fprintf(errOut, "warning: %s cannot be written safely as %s: left out (-o json or -o yaml keep them)\n", strings.Join(skipped, ", "), format)
	}
	return len(res.Vars), nil
}

// pickContainer is the requested container (-c), else the default-container
// annotation, else the first container, said on stderr when there was a
// choice (as kubectl exec does).
func pickContainer(errOut io.Writer, src workloadenv.Source, requested string) (string, error) {
	if requested != "" {
		return requested, nil
	}
	var names []string
	for _, c := range src.Spec.Containers {
		names = append(names, c.Name)
	}
	if def := src.Annotations[defaultContainerAnnotation]; def != "" {
		return def, nil
	}
	if len(names) > 1 {
		fmt.Fprintf(errOut, "Defaulted container %q out of: %s\n", names[0], strings.Join(names, ", "))
	}
	return names[0], nil
}

// workloadSource reads a workload and picks one of its running pods, for
// the fields only a pod has.
func workloadSource(ctx context.Context, kube kubernetes.Interface, ns, kind, name string) (workloadenv.Source, error) {
	src := workloadenv.Source{Namespace: ns}
	var selector *metav1.LabelSelector
	var err error
	switch kind {
	case "pod":
		var pod *corev1.Pod
		if pod, err = kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{}); err == nil {
			src.Spec, src.Labels, src.Annotations, src.Pod = &pod.Spec, pod.Labels, pod.Annotations, pod
			return src, nil
		}
	case "deployment":
		d, e := kube.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err = e; err == nil {
			src.Spec, src.Labels, src.Annotations, selector = &d.Spec.Template.Spec, d.Spec.Template.Labels, d.Spec.Template.Annotations, d.Spec.Selector
		}
	case "statefulset":
		s, e := kube.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
		if err = e; err == nil {
			src.Spec, src.Labels, src.Annotations, selector = &s.Spec.Template.Spec, s.Spec.Template.Labels, s.Spec.Template.Annotations, s.Spec.Selector
		}
	}
	switch {
	case apierrors.IsNotFound(err):
		return src, fmt.Errorf("%s %q not found in namespace %q", kind, name, ns)
	case apierrors.IsForbidden(err):
		return src, fmt.Errorf("cannot read %s %q in namespace %q: RBAC refuses it", kind, name, ns)
	case err != nil:
		return src, fmt.Errorf("read %s %q: %w", kind, name, err)
	}
	sel, err := metav1.LabelSelectorAsSelector(selector)
	if err != nil {
		return src, fmt.Errorf("%s %q has a selector kubectl-cz cannot read: %w", kind, name, err)
	}
	pods, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		if apierrors.IsForbidden(err) {
			return src, fmt.Errorf("cannot list pods in namespace %q: RBAC refuses it", ns)
		}
		return src, fmt.Errorf("list the pods of %s %q: %w", kind, name, err)
	}
	src.Pod = bestPod(pods.Items)
	return src, nil
}

// bestPod prefers a ready pod that is not going away, then the newest.
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

func workloadNames(ctx context.Context, kube kubernetes.Interface, ns, kind string) ([]string, error) {
	kind, _ = workloadKind(kind)
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
