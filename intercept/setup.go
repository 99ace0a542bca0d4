package intercept

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/kubectl-cz/kubectl-cz/agent/wire"
	"github.com/kubectl-cz/kubectl-cz/agentsecret"
	"github.com/kubectl-cz/kubectl-cz/lifecycle"
	"github.com/kubectl-cz/kubectl-cz/session"
)

const (
	// LabelInterceptor marks the interceptor's pods, and is what the
	// intercepted Service selects while intercepted.
	LabelInterceptor = "cz.dev/interceptor"
	primitive        = "intercept"
)

// What an intercept's journal entries may touch: it creates the decoy, the
// agent's Deployment and Secret, and patches the Service's selector and
// ports; a journal naming anything else is refused.
func init() {
	session.RegisterScope(primitive, session.Scope{
		Creates:   []schema.GroupResource{servicesGVR.GroupResource(), deploymentsGVR.GroupResource(), agentsecret.GVR.GroupResource()},
		Patches:   map[schema.GroupResource][][]string{servicesGVR.GroupResource(): {{"spec", "selector"}, {"spec", "ports"}}},
		PatchRole: "intercepted",
	})
}

var (
	servicesGVR    = schema.GroupVersionResource{Version: "v1", Resource: "services"}
	deploymentsGVR = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
)

// Target is the Service port to intercept.
type Target struct {
	Namespace, Service string
	// Port is the Service port's name or number; empty for a one-port Service.
	Port string
}

// Plan is what the interceptor of a Service looks like.
type Plan struct {
	Service  *corev1.Service
	PortKey  string // how the agent names the intercepted port
	Decoy    string // decoy Service name
	Agent    string // interceptor Deployment name, and its Secret's
	Existing bool   // an interceptor already runs: join it
}

// SessionID is the session that holds a Service's interceptor: shared by
// every developer intercepting it, so the last one to leave restores it.
func SessionID(namespace, service string) string {
	return childName("icpt-", namespace+"-"+service, 52)
}

// childName is prefix+base, shortened with a hash when it would be too long.
func childName(prefix, base string, max int) string {
	name := prefix + base
	if len(name) <= max {
		return name
	}
	sum := sha256.Sum256([]byte(base))
	return strings.TrimRight(name[:max-9], "-") + "-" + hex.EncodeToString(sum[:])[:8]
}

// PortKey is how a Service port is named to the agent.
func PortKey(p corev1.ServicePort) string {
	if p.Name != "" {
		return p.Name
	}
	return strconv.Itoa(int(p.Port))
}

// Prepare reads the Service and checks it can be intercepted, changing nothing.
func Prepare(ctx context.Context, kube kubernetes.Interface, t Target) (*Plan, error) {
	svc, err := kube.CoreV1().Services(t.Namespace).Get(ctx, t.Service, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("service %q not found in namespace %s (kubectl -n %s get services lists them)", t.Service, t.Namespace, t.Namespace)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read service %s/%s: %w", t.Namespace, t.Service, err)
	}
	p := &Plan{Service: svc, Decoy: childName("cz-decoy-", t.Service, 63), Agent: AgentName(t.Service)}
	if len(svc.Spec.Selector) == 0 {
		return nil, fmt.Errorf("service %s/%s has no selector: its endpoints are managed by hand, so there are no pods to redirect from", t.Namespace, t.Service)
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil, fmt.Errorf("service %s/%s is an ExternalName Service: it has no pods to intercept", t.Namespace, t.Service)
	}
	p.Existing = svc.Spec.Selector[LabelInterceptor] != ""
	port, err := pickPort(svc, t.Port)
	if err != nil {
		return nil, err
	}
	p.PortKey = PortKey(port)
	return p, nil
}

func pickPort(svc *corev1.Service, want string) (corev1.ServicePort, error) {
	var names []string
	for _, p := range svc.Spec.Ports {
		if want == "" && len(svc.Spec.Ports) == 1 {
			return p, nil
		}
		if want != "" && (p.Name == want || strconv.Itoa(int(p.Port)) == want) {
			if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
				return p, fmt.Errorf("port %s of service %s is %s: only TCP can be intercepted", want, svc.Name, p.Protocol)
			}
			return p, nil
		}
		names = append(names, fmt.Sprintf("%s (%d)", PortKey(p), p.Port))
	}
	if want == "" {
		return corev1.ServicePort{}, fmt.Errorf("service %s has %d ports: choose one with --remote-port (%s)", svc.Name, len(svc.Spec.Ports), strings.Join(names, ", "))
	}
	return corev1.ServicePort{}, fmt.Errorf("service %s has no port %q (it has %s)", svc.Name, want, strings.Join(names, ", "))
}

// AgentSpec is the interceptor's image and pull policy.
type AgentSpec struct {
	Image      string
	PullPolicy corev1.PullPolicy
}

// Install creates the decoy Service and the interceptor Deployment, waits
// for the agent, then points the Service at it: every step journaled in s
// first. progress gets one line per state change.
func Install(ctx context.Context, s *session.Session, kube kubernetes.Interface, cfg *rest.Config, p *Plan, agent AgentSpec, progress io.Writer) error {
	svc := p.Service
	ns := svc.Namespace
	labels := map[string]string{session.LabelManagedBy: session.ManagedBy, LabelInterceptor: svc.Name}

	// The agent's connection secret, under the Deployment's name.
	if _, err := agentsecret.Create(ctx, s, primitive, ns, p.Agent, labels); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("secret %s already exists: another developer is setting up an intercept of %s right now (retry in a few seconds), or a crashed one left it (kubectl cz session close %s)", p.Agent, svc.Name, SessionID(ns, svc.Name))
		}
		return err
	}

	created, err := s.Create(ctx, primitive, servicesGVR, toUnstructured(p.decoyService(labels)))
	if apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("service %s already exists: another developer is setting up an intercept of %s right now (retry in a few seconds), or a crashed one left it (kubectl cz session close %s)", p.Decoy, svc.Name, SessionID(ns, svc.Name))
	}
	if err != nil {
		return err
	}
	decoyIP, _, _ := unstructured.NestedString(created.Object, "spec", "clusterIP")
	fmt.Fprintf(progress, "created decoy service %s (%s) selecting the original pods\n", p.Decoy, decoyIP)

	if _, err := s.Create(ctx, primitive, deploymentsGVR, toUnstructured(p.agentDeployment(agent, labels, decoyIP))); err != nil {
		return err
	}
	fmt.Fprintf(progress, "created interceptor deployment %s (%s)\n", p.Agent, agent.Image)
	pod, err := WaitAgent(ctx, kube, ns, svc.Name, p.Agent, 90*time.Second, progress)
	if err != nil {
		return err
	}
	// The pod has no readiness probe (the control port is on its loopback,
	// out of the kubelet's reach): the agent is ready once it answers here,
	// through port-forward, with its secret.
	if err := Reach(ctx, cfg, kube, ns, pod, p.Agent, 30*time.Second); err != nil {
		return err
	}
	fmt.Fprintf(progress, "interceptor %s answers on its control port\n", pod)

	ref := session.ObjectRef{Version: "v1", Resource: "services", Kind: "Service", Namespace: ns, Name: svc.Name}
	_, err = s.Patch(ctx, primitive, ref, [][]string{{"spec", "selector"}, {"spec", "ports"}}, func(u *unstructured.Unstructured) error {
		return pointAtAgent(u, svc.Name)
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(progress, "service %s now selects the interceptor\n", svc.Name)
	if err := waitEndpoints(ctx, kube, ns, svc.Name, 30*time.Second); err != nil {
		return err
	}
	// The EndpointSlices say so; traffic follows once kube-proxy has
	// applied them. Active means traffic flows: the agent sends a probe to
	// the Service's own address and sees it arrive.
	if ip := svc.Spec.ClusterIP; ip == "" || ip == corev1.ClusterIPNone {
		return nil // headless: callers resolve the pods by DNS, no kube-proxy to wait for
	}
	fmt.Fprintf(progress, "waiting for service %s's address to reach the interceptor\n", svc.Name)
	return WaitRouted(ctx, cfg, kube, ns, pod, p.Agent, 30*time.Second)
}

// pointAtAgent makes a Service select the interceptor, port n of it on the
// agent's FirstListenPort+n.
func pointAtAgent(u *unstructured.Unstructured, service string) error {
	if err := unstructured.SetNestedStringMap(u.Object, map[string]string{LabelInterceptor: service}, "spec", "selector"); err != nil {
		return err
	}
	portsField, _, _ := unstructured.NestedSlice(u.Object, "spec", "ports")
	for i := range portsField {
		m, ok := portsField[i].(map[string]any)
		if !ok {
			return errors.New("unexpected spec.ports")
		}
		m["targetPort"] = int64(wire.FirstListenPort + i)
	}
	return unstructured.SetNestedSlice(u.Object, portsField, "spec", "ports")
}

// decoyService selects the Service's original pods, on the same ports.
func (p *Plan) decoyService(labels map[string]string) *corev1.Service {
	svc := p.Service
	decoy := &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{Name: p.Decoy, Namespace: svc.Namespace, Labels: labels},
		Spec:       corev1.ServiceSpec{Selector: svc.Spec.Selector},
	}
	for _, sp := range svc.Spec.Ports {
		decoy.Spec.Ports = append(decoy.Spec.Ports, corev1.ServicePort{Name: sp.Name, Protocol: sp.Protocol, Port: sp.Port, TargetPort: sp.TargetPort})
	}
	return decoy
}

// agentDeployment runs the interceptor: one listener per Service port,
// passing what it does not take to the decoy's address.
func (p *Plan) agentDeployment(agent AgentSpec, labels map[string]string, decoyIP string) *appsv1.Deployment {
	svc := p.Service
	args := []string{"intercept", "--decoy", decoyIP}
	var ports []corev1.ContainerPort
	for i, sp := range svc.Spec.Ports {
		spec := fmt.Sprintf("%s:%d:%d", PortKey(sp), wire.FirstListenPort+i, sp.Port)
		if PortKey(sp) == p.PortKey {
			spec += ":http"
			if ip := svc.Spec.ClusterIP; ip != "" && ip != corev1.ClusterIPNone {
				args = append(args, "--probe", net.JoinHostPort(ip, strconv.Itoa(int(sp.Port))))
			}
		}
		args = append(args, "--port", spec)
		ports = append(ports, corev1.ContainerPort{Name: fmt.Sprintf("p%d", i), ContainerPort: int32(wire.FirstListenPort + i)})
	}
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: p.Agent, Namespace: svc.Namespace, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{LabelInterceptor: svc.Name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       agentPod(agent, p.Agent, args, ports),
			},
		},
	}
}

// DryRun asks the API server to admit, without keeping them, the objects
// Install would create and the Service change it would make (server-side
// dry run: admission webhooks, Pod Security, quotas, validation).
func DryRun(ctx context.Context, kube kubernetes.Interface, p *Plan, agent AgentSpec) error {
	if p.Existing {
		return nil // joining changes no object
	}
	svc := p.Service
	ns := svc.Namespace
	labels := map[string]string{session.LabelManagedBy: session.ManagedBy, LabelInterceptor: svc.Name}
	dry := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: p.Agent, Namespace: ns, Labels: labels}, Data: map[string][]byte{"secret": []byte(wire.NewSecret())}}
	if _, err := kube.CoreV1().Secrets(ns).Create(ctx, secret, dry); err != nil {
		return fmt.Errorf("the API server would refuse the agent's Secret: %w", err)
	}
	if _, err := kube.CoreV1().Services(ns).Create(ctx, p.decoyService(labels), dry); err != nil {
		return fmt.Errorf("the API server would refuse the decoy Service: %w", err)
	}
	if _, err := kube.AppsV1().Deployments(ns).Create(ctx, p.agentDeployment(agent, labels, "10.0.0.1"), dry); err != nil {
		return fmt.Errorf("the API server would refuse the interceptor Deployment: %w", err)
	}
	u := toUnstructured(svc.DeepCopy())
	if err := pointAtAgent(u, svc.Name); err != nil {
		return err
	}
	var changed corev1.Service
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &changed); err != nil {
		return err
	}
	if _, err := kube.CoreV1().Services(ns).Update(ctx, &changed, metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		return fmt.Errorf("the API server would refuse the change of service %s: %w", svc.Name, err)
	}
	return nil
}

func agentPod(agent AgentSpec, secretName string, args []string, ports []corev1.ContainerPort) corev1.PodSpec {
	return corev1.PodSpec{
		AutomountServiceAccountToken:  ptr.To(false),
		EnableServiceLinks:            ptr.To(false),
		TerminationGracePeriodSeconds: ptr.To[int64](2),
		SecurityContext: &corev1.PodSecurityContext{
			RunAsNonRoot:   ptr.To(true),
			RunAsUser:      ptr.To[int64](65532),
			RunAsGroup:     ptr.To[int64](65532),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		Containers: []corev1.Container{{
			Name:            "cz-agent",
			Image:           agent.Image,
			ImagePullPolicy: agent.PullPolicy,
			Args:            args,
			Ports:           ports,
			Env:             []corev1.EnvVar{agentsecret.Env(secretName)},
			// A wedged agent is restarted. The probe runs in the container
			// and dials the control port on the pod's loopback: nothing
			// listens on the pod's address for it. No readiness probe: the
			// laptop proves the agent answers (Reach) before the Service
			// is pointed at it, and a probe's first period would delay that.
			LivenessProbe: &corev1.Probe{
				ProbeHandler:        corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"/cz-agent", "probe", "127.0.0.1:" + strconv.Itoa(wire.ControlPort)}}},
				InitialDelaySeconds: 5, PeriodSeconds: 10, TimeoutSeconds: 3, FailureThreshold: 3,
			},
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{}},
			SecurityContext: &corev1.SecurityContext{
				AllowPrivilegeEscalation: ptr.To(false),
				ReadOnlyRootFilesystem:   ptr.To(true),
				Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			},
		}},
	}
}

func toUnstructured(obj runtime.Object) *unstructured.Unstructured {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		panic(err) // typed API objects always convert
	}
	return &unstructured.Unstructured{Object: m}
}

// podFailure is a waiting reason that will not fix itself.
var podFailure = map[string]string{
	"ErrImagePull":               "the agent image cannot be pulled",
	"ImagePullBackOff":           "the agent image cannot be pulled",
	"ErrImageNeverPull":          "the agent image is not on the node and the pull policy is Never",
	"InvalidImageName":           "the agent image name is invalid",
	"CreateContainerConfigError": "the agent container cannot be configured",
	"CreateContainerError":       "the agent container cannot be created",
	"CrashLoopBackOff":           "the agent keeps crashing",
}

// WaitAgent waits for a Ready interceptor pod and returns its name; it
// fails early, with the reason, when the pod cannot start.
func WaitAgent(ctx context.Context, kube kubernetes.Interface, ns, service, deployment string, timeout time.Duration, progress io.Writer) (string, error) {
	last, ready := "", ""
	var configErrorSince time.Time
	say := func(msg string) {
		if msg != last {
			if !lifecycle.Say(ctx, msg) {
				fmt.Fprintln(progress, msg)
			}
			last = msg
		}
	}
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		pods, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: LabelInterceptor + "=" + service})
		if err != nil {
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			return false, fmt.Errorf("cannot list the interceptor's pods: %w", err)
		}
		for _, pod := range pods.Items {
			if pod.DeletionTimestamp != nil {
				continue
			}
			if podReady(&pod) {
				say(fmt.Sprintf("interceptor pod %s is ready", pod.Name))
				ready = pod.Name
				return true, nil
			}
			for _, cs := range pod.Status.ContainerStatuses {
				if w := cs.State.Waiting; w != nil {
					// The kubelet retries a container whose Secret its cache has
					// not synced yet: fatal only if it lasts.
					if w.Reason == "CreateContainerConfigError" && passing(&configErrorSince) {
						say(fmt.Sprintf("waiting for interceptor pod %s: %s", pod.Name, w.Reason))
						continue
					}
					if why, bad := podFailure[w.Reason]; bad {
						return false, fmt.Errorf("%s (%s: %s); pass --agent-image with an image the cluster can run", why, w.Reason, w.Message)
					}
					say(fmt.Sprintf("waiting for interceptor pod %s: %s", pod.Name, w.Reason))
				}
			}
			if len(pod.Status.ContainerStatuses) == 0 {
				say(fmt.Sprintf("waiting for interceptor pod %s: %s", pod.Name, pod.Status.Phase))
			}
		}
		if len(pods.Items) == 0 {
			if d, err := kube.AppsV1().Deployments(ns).Get(ctx, deployment, metav1.GetOptions{}); err == nil {
				for _, c := range d.Status.Conditions {
					if c.Type == appsv1.DeploymentReplicaFailure && c.Status == corev1.ConditionTrue {
						return false, fmt.Errorf("the interceptor pod cannot be created: %s", c.Message)
					}
				}
			}
			say("waiting for the interceptor pod to be created")
		}
		return false, nil
	})
	if wait.Interrupted(err) && ctx.Err() == nil {
		return "", fmt.Errorf("the interceptor was not ready within %s (kubectl -n %s describe deployment %s)", timeout, ns, deployment)
	}
	return ready, err
}

// passing reports whether a condition first seen at *since (set now if
// zero) is younger than configErrorGrace.
func passing(since *time.Time) bool {
	if since.IsZero() {
		*since = time.Now()
	}
	return time.Since(*since) < configErrorGrace
}

// configErrorGrace is how long a container configuration error may last
// before it counts as one that will not fix itself.
const configErrorGrace = 15 * time.Second

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitEndpoints waits until the Service's EndpointSlices list interceptor
// pods only; from then on kube-proxy sends new connections to the agent.
func waitEndpoints(ctx context.Context, kube kubernetes.Interface, ns, service string, timeout time.Duration) error {
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		pods, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: LabelInterceptor + "=" + service})
		slices, err2 := kube.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + service})
		return err == nil && err2 == nil && onlyAgents(slices.Items, pods.Items), nil
	})
	if wait.Interrupted(err) && ctx.Err() == nil {
		return fmt.Errorf("service %s's endpoints did not switch to the interceptor within %s", service, timeout)
	}
	return err
}

func onlyAgents(slices []discoveryv1.EndpointSlice, pods []corev1.Pod) bool {
	agents := map[string]bool{}
	for _, p := range pods {
		if p.Status.PodIP != "" && p.DeletionTimestamp == nil {
			agents[p.Status.PodIP] = true
		}
	}
	n := 0
	for _, s := range slices {
		for _, e := range s.Endpoints {
			for _, a := range e.Addresses {
				if !agents[a] {
					return false
				}
				if e.Conditions.Ready == nil || *e.Conditions.Ready {
					n++
				}
			}
		}
	}
	return n > 0
}
