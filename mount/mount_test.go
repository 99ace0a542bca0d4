package mount

import (
	"context"
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kubectl-cz/kubectl-cz/agent/files"
)

// Another mount adds its file server between our read of the pod and our
// update: the API server refuses ours with a conflict, and the retry must
// read the pod again and take the next port, not fail nor take the same.
func TestAddContainerRetriesAConflictOnAFreshPod(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns"}}
	kube := fake.NewSimpleClientset(pod)
	other := corev1.EphemeralContainer{EphemeralContainerCommon: corev1.EphemeralContainerCommon{
		Name: agentPrefix + "other", Args: []string{"files", "--listen", "127.0.0.1:" + strconv.Itoa(files.Port)},
	}}
	updates := 0
	kube.PrependReactor("update", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "ephemeralcontainers" {
			return false, nil, nil
		}
		if updates++; updates > 1 {
			return false, nil, nil
		}
		// The other mount wins the race.
		theirs := pod.DeepCopy()
		theirs.Spec.EphemeralContainers = append(theirs.Spec.EphemeralContainers, other)
		if err := kube.Tracker().Update(schema.GroupVersionResource{Version: "v1", Resource: "pods"}, theirs, "ns"); err != nil {
			t.Fatal(err)
		}
		return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "pods"}, "p", nil)
	})
	port, err := addContainer(context.Background(), kube, pod, func(port int) corev1.EphemeralContainer {
		return corev1.EphemeralContainer{EphemeralContainerCommon: corev1.EphemeralContainerCommon{
			Name: agentPrefix + "ours", Args: []string{"files", "--listen", "127.0.0.1:" + strconv.Itoa(port)},
		}}
	})
	if err != nil {
		t.Fatalf("a conflict failed the add: %v", err)
	}
	if updates != 2 {
		t.Fatalf("%d updates, want 2 (one refused, one retried)", updates)
	}
	if port != files.Port+1 {
		t.Fatalf("port %d, want %d (the other file server took %d)", port, files.Port+1, files.Port)
	}
	got, err := kube.CoreV1().Pods("ns").Get(context.Background(), "p", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(got.Spec.EphemeralContainers); n != 2 {
		t.Fatalf("%d ephemeral containers, want both file servers", n)
	}
}
