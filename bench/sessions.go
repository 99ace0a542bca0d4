package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubectl-cz/kubectl-cz/session"
)

// countingTransport counts the API requests a client makes.
type countingTransport struct {
	next          http.RoundTripper
	calls, writes atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.calls.Add(1)
	if r.Method != http.MethodGet {
		c.writes.Add(1)
	}
	return c.next.RoundTrip(r)
}

var configMapsGVR = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}

// bench.noop entries measure the journal alone: there is nothing to undo.
func init() {
	session.RegisterKind(session.Kind{Name: "bench.noop", Undo: func(context.Context, *session.UndoContext, session.Entry) error { return nil }})
	// The close bench creates ConfigMaps and patches their data.
	session.RegisterScope("bench", session.Scope{
		Creates: []schema.GroupResource{configMapsGVR.GroupResource()},
		Patches: map[schema.GroupResource][][]string{configMapsGVR.GroupResource(): {{"data"}}},
	})
}

// sessions measures the journal: the cost of a Record (time and API calls)
// beside a plain ConfigMap update, and the time to close a session of 10
// entries (5 objects created, 5 patched) beside the same 10 writes made
// directly.
func (b *bench) sessions(ctx context.Context, cfg *rest.Config) error {
	fmt.Fprintln(os.Stderr, "bench: session journal")
	counter := &countingTransport{}
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = 1000, 1000
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { counter.next = rt; return counter })
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	clients := session.Clients{Kube: kube, Dynamic: dyn}
	ns := benchNamespace

	direct := &row{name: "ConfigMap update, direct client-go call", unit: "ms"}
	record := &row{name: "journal Record, session package", unit: "ms", baseline: "ConfigMap update, direct client-go call"}
	calls := &row{name: "API calls per Record (writes)", unit: "calls"}
	closeRow := &row{name: "close a session of 10 entries, session package", unit: "ms", baseline: "5 read+update and 5 deletes, direct client-go calls"}
	tenDirect := &row{name: "5 read+update and 5 deletes, direct client-go calls", unit: "ms"}

	plain := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "bench-direct", Namespace: ns}}
	_ = kube.CoreV1().ConfigMaps(ns).Delete(ctx, plain.Name, metav1.DeleteOptions{})
	if plain, err = kube.CoreV1().ConfigMaps(ns).Create(ctx, plain, metav1.CreateOptions{}); err != nil {
		return err
	}
	defer kube.CoreV1().ConfigMaps(ns).Delete(context.Background(), plain.Name, metav1.DeleteOptions{})

	for run := 0; run < b.runs; run++ {
		// Records: the first creates the journal; the next ones are measured.
		s, err := session.Open(session.Config{Clients: clients, Owner: session.Owner{User: "bench"}, StateDir: b.tmp})
		if err != nil {
			return err
		}
		if _, err := s.Record(ctx, "bench.noop", "bench", ns, map[string]string{}); err != nil {
			return err
		}
		// Whatever happens, leave no journal behind.
		defer s.Close(context.Background(), session.CloseOptions{})
		for i := 0; i < 20; i++ {
			before, beforeWrites := counter.calls.Load(), counter.writes.Load()
			start := time.Now()
			if _, err := s.Record(ctx, "bench.noop", "bench", ns, map[string]int{"i": i}); err != nil {
				return err
			}
			record.samples = append(record.samples, ms(time.Since(start)))
			if run == 0 && i == 0 {
				fmt.Fprintf(os.Stderr, "bench: a Record made %d API calls (%d writes)\n", counter.calls.Load()-before, counter.writes.Load()-beforeWrites)
			}
			calls.samples = append(calls.samples, float64(counter.calls.Load()-before))

			plain.Data = map[string]string{"i": fmt.Sprint(i)}
			start = time.Now()
			if plain, err = kube.CoreV1().ConfigMaps(ns).Update(ctx, plain, metav1.UpdateOptions{}); err != nil {
				return err
			}
			direct.samples = append(direct.samples, ms(time.Since(start)))
		}
		if _, err := s.Close(ctx, session.CloseOptions{}); err != nil {
			return err
		}

		// A session of 10 entries: 5 created ConfigMaps, 5 patched ones.
		targets := make([]string, 5)
		for i := range targets {
			targets[i] = fmt.Sprintf("bench-target-%d", i)
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: targets[i], Namespace: ns}, Data: map[string]string{"v": "original"}}
			_ = kube.CoreV1().ConfigMaps(ns).Delete(ctx, cm.Name, metav1.DeleteOptions{})
			if _, err := kube.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
				return err
			}
		}
		s, err = session.Open(session.Config{Clients: clients, Owner: session.Owner{User: "bench"}, StateDir: b.tmp})
		if err != nil {
			return err
		}
		for i, name := range targets {
			cm := &unstructured.Unstructured{}
			cm.SetAPIVersion("v1")
			cm.SetKind("ConfigMap")
			cm.SetNamespace(ns)
			cm.SetName(fmt.Sprintf("bench-made-%d", i))
			if _, err := s.Create(ctx, "bench", configMapsGVR, cm); err != nil {
				return err
			}
			ref := session.ObjectRef{Version: "v1", Resource: "configmaps", Kind: "ConfigMap", Namespace: ns, Name: name}
			if _, err := s.Patch(ctx, "bench", ref, [][]string{{"data"}}, func(u *unstructured.Unstructured) error {
				return unstructured.SetNestedStringMap(u.Object, map[string]string{"v": "patched"}, "data")
			}); err != nil {
				return err
			}
		}
		start := time.Now()
		res, err := s.Close(ctx, session.CloseOptions{})
		if err != nil {
			return err
		}
		if res.Undone != 10 {
			return fmt.Errorf("close undid %d entries, want 10", res.Undone)
		}
		closeRow.samples = append(closeRow.samples, ms(time.Since(start)))

		// The same 10 writes, made directly: 5 updates and 5 deletes.
		start = time.Now()
		for _, name := range targets {
			cm, err := kube.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			cm.Data = map[string]string{"v": "again"}
			if _, err := kube.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
				return err
			}
			if err := kube.CoreV1().ConfigMaps(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
				return err
			}
		}
		tenDirect.samples = append(tenDirect.samples, ms(time.Since(start)))
	}
	for _, r := range []*row{direct, record, calls, tenDirect, closeRow} {
		b.table.add(r)
	}
	return nil
}
