package main

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// A Service waits until each of its ready pods is a ready endpoint; a pod
// not ready yet (crash-looping, say) does not hold it.
func TestServicesMissingEndpoints(t *testing.T) {
	since := time.Now().Add(-time.Minute)
	pod := func(name, ip string, ready bool) *corev1.Pod {
		status := corev1.ConditionFalse
		if ready {
			status = corev1.ConditionTrue
		}
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", Labels: map[string]string{"app": "db"}},
			Status: corev1.PodStatus{PodIP: ip, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status}},
				ContainerStatuses: []corev1.ContainerStatus{{State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}}}},
		}
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "ns"}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "db"}}}
	slice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "db-x", Namespace: "ns", Labels: map[string]string{discoveryv1.LabelServiceName: "db"}}}
	cs := fake.NewClientset(svc, pod("db-0", "10.0.0.5", true), pod("db-1", "10.0.0.6", false), slice)
	ctx := context.Background()
	if missing, err := servicesMissingEndpoints(ctx, cs, "ns", since); err != nil || len(missing) != 1 || missing[0] != "db" {
		t.Fatalf("no endpoints yet: missing %v, %v", missing, err)
	}
	slice.Endpoints = []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.5"}}} // no Ready condition: ready
	if _, err := cs.DiscoveryV1().EndpointSlices("ns").Update(ctx, slice, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if missing, err := servicesMissingEndpoints(ctx, cs, "ns", since); err != nil || len(missing) != 0 {
		t.Fatalf("the ready pod listed: missing %v, %v", missing, err)
	}
}
