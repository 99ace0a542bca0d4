package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
)

// After a restart with kept state, the API server still holds the statuses
// of before (node Ready, pods Ready). Readiness here therefore means: reported
// by the kubelet that runs now, i.e. newer than its start.

// processStart is when a process started, from /proc (clock ticks since boot).
func processStart(pid int) (time.Time, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return time.Time{}, err
	}
	s := string(stat)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(fields) < 20 {
		return time.Time{}, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ticks, err := strconv.ParseInt(fields[19], 10, 64) // field 22 of the whole line
	if err != nil {
		return time.Time{}, err
	}
	procStat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}, err
	}
	for _, line := range strings.Split(string(procStat), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			boot, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}, err
			}
			const clkTck = 100 // USER_HZ on Linux
			return time.Unix(boot, 0).Add(time.Duration(ticks) * time.Second / clkTck), nil
		}
	}
	return time.Time{}, fmt.Errorf("no btime in /proc/stat")
}

// kubeletStart is the start of the running kubelet, to the second (the API's
// timestamps have seconds only), or the zero time if it does not run.
func (l layout) kubeletStart() time.Time {
	for _, c := range l.components() {
		if c.name != "kubelet" {
			continue
		}
		if pid, ok := l.running(c); ok {
			if t, err := processStart(pid); err == nil {
				return t.Truncate(time.Second)
			}
		}
	}
	return time.Time{}
}

func nodeReadySince(node *corev1.Node, since time.Time) bool {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue && !c.LastHeartbeatTime.Time.Before(since)
		}
	}
	return false
}

// podsReadySince is true when there is at least one pod for the selector and
// every pod is Ready with all containers started after since.
func podsReadySince(ctx context.Context, cs kubernetes.Interface, ns, selector string, since time.Time) (bool, string) {
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil || len(pods.Items) == 0 {
		return false, "no pods yet"
	}
	ready := 0
	for i := range pods.Items {
		if podReadySince(&pods.Items[i], since) {
			ready++
		}
	}
	return ready == len(pods.Items), fmt.Sprintf("%d/%d pods ready", ready, len(pods.Items))
}

func podReadySince(p *corev1.Pod, since time.Time) bool {
	if p.DeletionTimestamp != nil {
		return false
	}
	ok := false
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			ok = c.Status == corev1.ConditionTrue
		}
	}
	for _, cs := range p.Status.ContainerStatuses {
		if cs.State.Running == nil || cs.State.Running.StartedAt.Time.Before(since) {
			return false
		}
	}
	return ok && len(p.Status.ContainerStatuses) > 0
}

// waitPods waits for podsReadySince, printing progress when it changes.
func waitPods(ctx context.Context, cs kubernetes.Interface, ns, selector string, since time.Time, timeout time.Duration) error {
	last := ""
	return waitFor(ctx, timeout, fmt.Sprintf("pods %s in %s", selector, ns), func() bool {
		ok, msg := podsReadySince(ctx, cs, ns, selector, since)
		if msg = fmt.Sprintf("  %s %s: %s", ns, selector, msg); msg != last {
			fmt.Println(msg)
			last = msg
		}
		return ok
	}, "kubectl -n "+ns+" get pods -l "+selector)
}

// waitEndpoints waits until every Service in ns with a selector lists each
// of its ready pods as a ready endpoint. A pod is Ready a moment before its
// EndpointSlice says so, and a request in that gap would ask CoreDNS for a
// headless Service that has no address yet: the NXDOMAIN is then cached for
// the zone's TTL (30 s), longer than any retry here would wait.
func waitEndpoints(ctx context.Context, cs kubernetes.Interface, ns string, since time.Time, timeout time.Duration) error {
	last := ""
	return waitFor(ctx, timeout, "the endpoints of the Services in "+ns, func() bool {
		missing, err := servicesMissingEndpoints(ctx, cs, ns, since)
		msg := fmt.Sprintf("  %s: Services waiting for endpoints: %s", ns, strings.Join(missing, ", "))
		if err != nil {
			msg = fmt.Sprintf("  %s: %v", ns, err)
		}
		if msg != last && (err != nil || len(missing) > 0) {
			fmt.Println(msg)
		}
		last = msg
		return err == nil && len(missing) == 0
	}, "kubectl -n "+ns+" get endpointslices")
}

// servicesMissingEndpoints names the Services whose EndpointSlices do not yet
// list every ready pod of their selector as a ready endpoint (one list of
// each kind per call, matched here).
func servicesMissingEndpoints(ctx context.Context, cs kubernetes.Interface, ns string, since time.Time) ([]string, error) {
	svcs, err := cs.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	slices, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	ready := map[string]map[string]bool{} // Service -> ready endpoint addresses
	for _, sl := range slices.Items {
		svc := sl.Labels[discoveryv1.LabelServiceName]
		if ready[svc] == nil {
			ready[svc] = map[string]bool{}
		}
		for _, ep := range sl.Endpoints {
			if ep.Conditions.Ready == nil || *ep.Conditions.Ready { // nil: ready, by the API's contract
				for _, a := range ep.Addresses {
					ready[svc][a] = true
				}
			}
		}
	}
	var missing []string
	for _, svc := range svcs.Items {
		if len(svc.Spec.Selector) == 0 {
			continue
		}
		sel := labels.SelectorFromSet(svc.Spec.Selector)
		for i := range pods.Items {
			p := &pods.Items[i]
			if sel.Matches(labels.Set(p.Labels)) && podReadySince(p, since) && !ready[svc.Name][p.Status.PodIP] {
				missing = append(missing, svc.Name)
				break
			}
		}
	}
	return missing, nil
}

// dnsAnswers asks the cluster DNS Service, from the host, for the API
// server's Service name: the proof that CoreDNS, kube-proxy and the Service
// path all work.
func dnsAnswers(ctx context.Context) bool {
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, net.JoinHostPort(dnsServiceIP, "53"))
	}}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	addrs, err := r.LookupHost(ctx, "kubernetes.default.svc.cluster.local")
	return err == nil && len(addrs) == 1 && addrs[0] == apiServiceIP
}

// explainNamespace prints, on stderr, what a wait that timed out would need
// to be understood without the cluster at hand (CI keeps only the log): each
// pod's phase and container states, and the namespace's latest events.
func explainNamespace(cs kubernetes.Interface, ns string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w := os.Stderr
	// Events first: CI shows the log's tail, where the pods' states are what
	// tells most.
	if evs, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{}); err == nil {
		items := evs.Items
		if len(items) > 30 {
			items = items[len(items)-30:]
		}
		fmt.Fprintf(w, "latest events in %s:\n", ns)
		for _, e := range items {
			fmt.Fprintf(w, "  %s %s %s/%s: %s (x%d)\n", e.LastTimestamp.Format(time.TimeOnly), e.Reason,
				e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Message, e.Count)
		}
	}
	if pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); err == nil {
		fmt.Fprintf(w, "pods in %s:\n", ns)
		for _, p := range pods.Items {
			fmt.Fprintf(w, "  %s: %s ip=%s node=%q %s\n", p.Name, p.Status.Phase, p.Status.PodIP, p.Spec.NodeName, p.Status.Message)
			for _, c := range p.Status.Conditions {
				if c.Status != corev1.ConditionTrue {
					fmt.Fprintf(w, "    condition %s=%s %s %s\n", c.Type, c.Status, c.Reason, c.Message)
				}
			}
			for _, s := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
				fmt.Fprintf(w, "    container %s: ready=%t restarts=%d %s\n", s.Name, s.Ready, s.RestartCount, containerState(s.State))
				if s.LastTerminationState.Terminated != nil {
					fmt.Fprintf(w, "      last: %s\n", containerState(s.LastTerminationState))
				}
			}
		}
	}
	// More ports than pods on the node: a dead cluster's pods may still hold
	// addresses on the bridge.
	if out, err := output("ip", "-o", "link", "show", "master", cniBridge); err == nil {
		fmt.Fprintf(w, "ports on %s: %d\n", cniBridge, strings.Count(out, "\n"))
	}
}

func containerState(s corev1.ContainerState) string {
	switch {
	case s.Waiting != nil:
		return fmt.Sprintf("waiting %s %s", s.Waiting.Reason, s.Waiting.Message)
	case s.Running != nil:
		return "running since " + s.Running.StartedAt.Format(time.TimeOnly)
	case s.Terminated != nil:
		return fmt.Sprintf("terminated %s exit=%d %s", s.Terminated.Reason, s.Terminated.ExitCode, s.Terminated.Message)
	}
	return "no state"
}
