package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

const (
	scaleNamespace = "cz-bench-scale"
	scaleServices  = 1000
)

// scaleShape is how the bench's Services are spread: the issue asks for
// 1,000 in one namespace, and 5 namespaces of 200.
type scaleShape struct {
	label      string
	namespaces []string
	perNS      int
}

var scaleShapes = []scaleShape{
	{label: fmt.Sprintf("%d Services", scaleServices), namespaces: []string{scaleNamespace}, perNS: scaleServices},
	{label: "5 namespaces of 200 Services", namespaces: []string{scaleNamespace + "-1", scaleNamespace + "-2", scaleNamespace + "-3", scaleNamespace + "-4", scaleNamespace + "-5"}, perNS: 200},
}

// scale measures teleport of many Services (one pod behind a namespace's
// Services), in each shape: from start until every ClusterIP answers on the
// laptop, the plugin's memory and its CPU at rest, and (1,000 in one
// namespace) how soon a Service created or deleted meanwhile answers or
// goes.
func (b *bench) scale(ctx context.Context, cfg *rest.Config) error {
	fast := rest.CopyConfig(cfg)
	fast.QPS, fast.Burst = 200, 400
	cs, err := kubernetes.NewForConfig(fast)
	if err != nil {
		return err
	}
	for i, shape := range scaleShapes {
		if err := b.scaleShape(ctx, cs, shape, i == 0); err != nil {
			return err
		}
	}
	return nil
}

func (b *bench) scaleShape(ctx context.Context, cs kubernetes.Interface, shape scaleShape, changes bool) error {
	fmt.Fprintf(os.Stderr, "bench: kubectl cz teleport of %s\n", shape.label)
	defer removeScaleNamespaces(cs, shape.namespaces)
	var ips []string
	for _, ns := range shape.namespaces {
		more, err := scaleFixture(ctx, cs, ns, shape.perNS)
		if err != nil {
			return err
		}
		ips = append(ips, more...)
	}
	dial, err := laptopDialer()
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, DialContext: dial}}
	active := &row{name: shape.label + ", teleport active after start (listening on every address), kubectl cz teleport", unit: "s"}
	all := &row{name: shape.label + ", all answering after start, kubectl cz teleport", unit: "s"}
	rss := &row{name: shape.label + ", plugin memory (RSS), kubectl cz teleport", unit: "MiB"}
	cpu := &row{name: shape.label + ", plugin CPU at rest (5 s), kubectl cz teleport", unit: "%"}
	added := &row{name: "a Service created, answering after, kubectl cz teleport", unit: "s"}
	gone := &row{name: "a Service deleted, gone after, kubectl cz teleport", unit: "s"}
	args := append([]string{"-n", shape.namespaces[0], "teleport", "namespace"}, shape.namespaces...)
	args = append(args, "--dns", "none")
	for run := 0; run < b.runs; run++ {
		t0 := time.Now()
		cmd, secs, err := startPlugin(ctx, teleportActive, args...)
		if err != nil {
			return err
		}
		active.samples = append(active.samples, secs)
		err = allAnswer(ctx, client, ips)
		if err == nil {
			all.samples = append(all.samples, time.Since(t0).Seconds())
			pid := cmd.Process.Pid
			time.Sleep(2 * time.Second) // settled
			if m, err := rssMiB(pid); err == nil {
				rss.samples = append(rss.samples, m)
			}
			if c, err := cpuShare(pid, 5*time.Second); err == nil {
				cpu.samples = append(cpu.samples, c)
			}
			if changes {
				var up, down float64
				if up, down, err = addAndDelete(ctx, cs, client, run); err == nil {
					added.samples = append(added.samples, up)
					gone.samples = append(gone.samples, down)
				}
			}
		}
		if serr := stopPlugin(cmd); err == nil && serr != nil {
			err = fmt.Errorf("teleport exit: %w", serr)
		}
		if err != nil {
			return err
		}
	}
	rows := []*row{active, all, rss, cpu}
	if changes {
		rows = append(rows, added, gone)
	}
	for _, r := range rows {
		b.table.add(r)
	}
	return nil
}

// scaleFixture makes the namespace: one pod answering HTTP on 8080 and the
// Services selecting it; it returns their ClusterIPs.
func scaleFixture(ctx context.Context, cs kubernetes.Interface, ns string, n int) ([]string, error) {
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	labels := map[string]string{"app": "scale-backend"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "backend"},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "backend", Image: "kubectl-cz.local/demo:dev", ImagePullPolicy: corev1.PullIfNotPresent,
					Env:            []corev1.EnvVar{{Name: "ROLE", Value: "leaf"}},
					Ports:          []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}}, PeriodSeconds: 1},
				}}},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	ips := make([]string, n)
	work := make(chan int)
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				name := fmt.Sprintf("svc-%04d", i)
				svc, err := cs.CoreV1().Services(ns).Create(ctx, scaleService(name, labels), metav1.CreateOptions{})
				if apierrors.IsAlreadyExists(err) {
					svc, err = cs.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				ips[i] = svc.Spec.ClusterIP
			}
		}()
	}
	for i := 0; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return nil, fmt.Errorf("create the Services: %w", err)
	}
	// Every Service's EndpointSlice names the ready pod before the clock
	// starts: the controller makes 1,000 of them at its own pace (a first
	// run once took 44 s waiting for it).
	deadline := time.Now().Add(3 * time.Minute)
	for {
		slices, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{})
		ready := map[string]bool{}
		if err == nil {
			for _, s := range slices.Items {
				for _, e := range s.Endpoints {
					if e.Conditions.Ready != nil && *e.Conditions.Ready {
						ready[s.Labels[discoveryv1.LabelServiceName]] = true
					}
				}
			}
		}
		if len(ready) >= n {
			return ips, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%d of %d Services have a ready endpoint after 3 minutes", len(ready), n)
		}
		time.Sleep(time.Second)
	}
}

// removeScaleNamespaces deletes the namespaces and waits until they are
// gone, so what the bench measures next does not share the machine with
// them.
func removeScaleNamespaces(cs kubernetes.Interface, namespaces []string) {
	ctx := context.Background()
	for _, ns := range namespaces {
		_ = cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	}
	for _, ns := range namespaces {
		for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
			if _, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); apierrors.IsNotFound(err) {
				break
			}
		}
	}
}

func scaleService(name string, selector map[string]string) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.ServiceSpec{Selector: selector,
		Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}}}
}

func answers(ctx context.Context, client *http.Client, ip string) bool {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(ip, "80")+"/healthz", nil)
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// allAnswer returns once every address answered once (32 callers at a time).
func allAnswer(ctx context.Context, client *http.Client, ips []string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	work := make(chan string)
	var n atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ip := range work {
				for !answers(ctx, client, ip) && ctx.Err() == nil {
					time.Sleep(20 * time.Millisecond)
				}
				if ctx.Err() == nil {
					n.Add(1)
				}
			}
		}()
	}
	for _, ip := range ips {
		work <- ip
	}
	close(work)
	wg.Wait()
	if ctx.Err() != nil {
		return fmt.Errorf("not every Service answered within 2 minutes (%d did)", n.Load())
	}
	return nil
}

// addAndDelete creates a Service and times until it answers, then deletes
// it and times until it no longer does.
func addAndDelete(ctx context.Context, cs kubernetes.Interface, client *http.Client, run int) (float64, float64, error) {
	name := fmt.Sprintf("svc-new-%d", run)
	t0 := time.Now()
	svc, err := cs.CoreV1().Services(scaleNamespace).Create(ctx, scaleService(name, map[string]string{"app": "scale-backend"}), metav1.CreateOptions{})
	if err != nil {
		return 0, 0, err
	}
	for !answers(ctx, client, svc.Spec.ClusterIP) {
		if time.Since(t0) > time.Minute {
			return 0, 0, fmt.Errorf("a new Service did not answer within a minute")
		}
		time.Sleep(10 * time.Millisecond)
	}
	up := time.Since(t0).Seconds()
	t0 = time.Now()
	if err := cs.CoreV1().Services(scaleNamespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		return 0, 0, err
	}
	for answers(ctx, client, svc.Spec.ClusterIP) {
		if time.Since(t0) > time.Minute {
			return 0, 0, fmt.Errorf("a deleted Service still answered after a minute")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return up, time.Since(t0).Seconds(), nil
}

func rssMiB(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// cpuShare is the process's CPU time over d, as a share of one core.
func cpuShare(pid int, d time.Duration) (float64, error) {
	ticks := func() (float64, error) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, err
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		u, _ := strconv.ParseFloat(f[11], 64) // utime, field 14 of the line
		k, _ := strconv.ParseFloat(f[12], 64) // stime
		return u + k, nil
	}
	a, err := ticks()
	if err != nil {
		return 0, err
	}
	time.Sleep(d)
	z, err := ticks()
	if err != nil {
		return 0, err
	}
	return (z - a) / 100 / d.Seconds() * 100, nil // USER_HZ 100
}
