package session

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	kubetesting "k8s.io/client-go/testing"
)

var (
	servicesGVR   = schema.GroupVersionResource{Version: "v1", Resource: "services"}
	configMapsGVR = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	serviceRef    = ObjectRef{Version: "v1", Resource: "services", Kind: "Service", Namespace: "ns", Name: "core"}
	selectorPath  = [][]string{{"spec", "selector"}}
)

// The test primitive of these tests creates ConfigMaps and retargets
// Services, as the cztest build's does.
func init() {
	RegisterScope("test", Scope{
		Creates: []schema.GroupResource{{Resource: "configmaps"}},
		Patches: map[schema.GroupResource][][]string{{Resource: "services"}: {{"spec", "selector"}}},
	})
}

func fakeClients(t *testing.T) (Clients, *fake.Clientset) {
	t.Helper()
	svc := &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{Name: "core", Namespace: "ns", UID: "svc-uid"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "core"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
	}
	dyn := dynamicfake.NewSimpleDynamicClient(runtime.NewScheme(), mustUnstructured(t, svc))
	// The API server gives every new object a UID; the fake does not.
	uids := 0
	dyn.PrependReactor("create", "*", func(a kubetesting.Action) (bool, runtime.Object, error) {
		if u, ok := a.(kubetesting.CreateAction).GetObject().(*unstructured.Unstructured); ok && u.GetUID() == "" {
			uids++
			u.SetUID(types.UID(fmt.Sprintf("uid-%d", uids)))
		}
		return false, nil, nil
	})
	kube := fake.NewClientset()
	kube.PrependReactor("create", "configmaps", func(a kubetesting.Action) (bool, runtime.Object, error) {
		if cm, ok := a.(kubetesting.CreateAction).GetObject().(*corev1.ConfigMap); ok && cm.UID == "" {
			uids++
			cm.UID = types.UID(fmt.Sprintf("uid-%d", uids))
		}
		return false, nil, nil
	})
	return Clients{Kube: kube, Dynamic: dyn}, kube
}

func mustUnstructured(t *testing.T, obj runtime.Object) *unstructured.Unstructured {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	return &unstructured.Unstructured{Object: m}
}

func newConfigMap(name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("v1")
	u.SetKind("ConfigMap")
	u.SetNamespace("ns")
	u.SetName(name)
	return u
}

func retarget(u *unstructured.Unstructured) error {
	return unstructured.SetNestedStringMap(u.Object, map[string]string{"app": "interceptor"}, "spec", "selector")
}

func openTest(t *testing.T, c Clients) *Session {
	t.Helper()
	s, err := Open(Config{Clients: c, Owner: Owner{User: "alice"}, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func selector(t *testing.T, c Clients) map[string]string {
	t.Helper()
	u, err := c.Dynamic.Resource(servicesGVR).Namespace("ns").Get(context.Background(), "core", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m, _, _ := unstructured.NestedStringMap(u.Object, "spec", "selector")
	return m
}

func TestCreatePatchCloseRestores(t *testing.T) {
	ctx := context.Background()
	c, kube := fakeClients(t)
	s := openTest(t, c)
	created, err := s.Create(ctx, "test", configMapsGVR, newConfigMap("made-by-session"))
	if err != nil {
		t.Fatal(err)
	}
	if refs := created.GetOwnerReferences(); len(refs) != 1 || refs[0].Name != JournalName(s.ID()) {
		t.Fatalf("created object owner refs %+v: want the journal", refs)
	}
	if _, err := s.Patch(ctx, "test", serviceRef, selectorPath, retarget); err != nil {
		t.Fatal(err)
	}
	if got := selector(t, c); got["app"] != "interceptor" {
		t.Fatalf("selector after patch %v", got)
	}
	cm, err := kube.CoreV1().ConfigMaps("ns").Get(ctx, JournalName(s.ID()), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cm.Labels[LabelManagedBy] != ManagedBy || cm.Labels[LabelSession] != s.ID() {
		t.Fatalf("journal labels %v", cm.Labels)
	}
	if _, entries, err := decodeJournal(cm.Data); err != nil || len(entries) != 2 || entries[0].State != Applied || entries[1].State != Applied {
		t.Fatalf("journal entries %+v, %v", entries, err)
	}

	var log bytes.Buffer
	res, err := s.Close(ctx, CloseOptions{Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	if res.Undone != 2 || res.Left != 0 {
		t.Fatalf("close %+v", res)
	}
	if got := selector(t, c); len(got) != 1 || got["app"] != "core" {
		t.Fatalf("selector after close %v", got)
	}
	if _, err := c.Dynamic.Resource(configMapsGVR).Namespace("ns").Get(ctx, "made-by-session", metav1.GetOptions{}); err == nil {
		t.Fatal("the created ConfigMap survived the close")
	}
	if _, err := kube.CoreV1().ConfigMaps("ns").Get(ctx, JournalName(s.ID()), metav1.GetOptions{}); err == nil {
		t.Fatal("the journal survived the close")
	}
	// Idempotent: a second close finds nothing and changes nothing.
	if res, err := s.Close(ctx, CloseOptions{}); err != nil || res.Undone != 0 {
		t.Fatalf("second close %+v %v", res, err)
	}
}

// Each Record after the first is a single Update of the journal: no read.
func TestRecordIsOneWrite(t *testing.T) {
	ctx := context.Background()
	c, kube := fakeClients(t)
	s := openTest(t, c)
	if _, err := s.Record(ctx, KindCreated, "test", "ns", createdData{}); err != nil {
		t.Fatal(err)
	}
	kube.ClearActions()
	for i := 0; i < 5; i++ {
		if _, err := s.Record(ctx, KindCreated, "test", "ns", createdData{}); err != nil {
			t.Fatal(err)
		}
	}
	actions := kube.Actions()
	if len(actions) != 5 {
		t.Fatalf("%d API calls for 5 records: %v", len(actions), actions)
	}
	for _, a := range actions {
		if a.GetVerb() != "update" {
			t.Fatalf("record made a %s", a.GetVerb())
		}
	}
}

func TestCloseReportsConflictAndForceRestores(t *testing.T) {
	ctx := context.Background()
	c, _ := fakeClients(t)
	s := openTest(t, c)
	if _, err := s.Patch(ctx, "test", serviceRef, selectorPath, retarget); err != nil {
		t.Fatal(err)
	}
	// Someone else edits the selector after the session did.
	u, _ := c.Dynamic.Resource(servicesGVR).Namespace("ns").Get(ctx, "core", metav1.GetOptions{})
	_ = unstructured.SetNestedStringMap(u.Object, map[string]string{"app": "someone-else"}, "spec", "selector")
	if _, err := c.Dynamic.Resource(servicesGVR).Namespace("ns").Update(ctx, u, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err := s.Close(ctx, CloseOptions{})
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "--force") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("err = %v: want a one-line conflict that mentions --force", err)
	}
	if got := selector(t, c); got["app"] != "someone-else" {
		t.Fatalf("a conflicting close changed the selector: %v", got)
	}
	if _, err := s.Close(ctx, CloseOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if got := selector(t, c); got["app"] != "core" {
		t.Fatalf("forced close left %v", got)
	}
}

// A crash between Record and the change leaves a Recorded entry whose change
// never happened: close must accept it and change nothing.
func TestCloseToleratesChangeThatNeverHappened(t *testing.T) {
	ctx := context.Background()
	c, _ := fakeClients(t)
	s := openTest(t, c)
	ref := serviceRef
	ref.UID = "svc-uid"
	d := patchedData{Object: ref, Fields: []FieldChange{{Path: []string{"spec", "selector"}, Original: []byte(`{"app":"core"}`), Patched: []byte(`{"app":"x"}`)}}}
	if _, err := s.Record(ctx, KindPatched, "test", "ns", d); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Record(ctx, KindCreated, "test", "ns", createdData{Object: ObjectRef{Version: "v1", Resource: "configmaps", Kind: "ConfigMap", Namespace: "ns", Name: "never-made"}}); err != nil {
		t.Fatal(err)
	}
	res, err := s.Close(ctx, CloseOptions{})
	if err != nil || res.Undone != 2 {
		t.Fatalf("%+v %v", res, err)
	}
	if got := selector(t, c); got["app"] != "core" {
		t.Fatalf("selector %v", got)
	}
}

func TestCreatedObjectOfSomeoneElseIsKept(t *testing.T) {
	ctx := context.Background()
	c, _ := fakeClients(t)
	s := openTest(t, c)
	// Recorded, then crash; meanwhile a user creates an object of that name.
	if _, err := s.Record(ctx, KindCreated, "test", "ns", createdData{Object: ObjectRef{Version: "v1", Resource: "configmaps", Kind: "ConfigMap", Namespace: "ns", Name: "mine"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Dynamic.Resource(configMapsGVR).Namespace("ns").Create(ctx, newConfigMap("mine"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Close(ctx, CloseOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Dynamic.Resource(configMapsGVR).Namespace("ns").Get(ctx, "mine", metav1.GetOptions{}); err != nil {
		t.Fatalf("the user's object was deleted: %v", err)
	}
}

func TestJournalForbiddenIsOneClearLine(t *testing.T) {
	ctx := context.Background()
	c, kube := fakeClients(t)
	kube.PrependReactor("create", "configmaps", func(kubetesting.Action) (bool, runtime.Object, error) {
		return true, nil, errForbidden()
	})
	s := openTest(t, c)
	_, err := s.Record(ctx, KindCreated, "test", "ns", createdData{})
	if err == nil || !strings.Contains(err.Error(), "forbidden") || !strings.Contains(err.Error(), "configmaps in namespace ns") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("err = %v", err)
	}
}

func errForbidden() error {
	return apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, "x", errors.New("RBAC: no"))
}

// A hand-edited entry (an empty field path) fails the whole close before
// anything is undone.
func TestCloseChecksEveryEntryFirst(t *testing.T) {
	ctx := context.Background()
	c, _ := fakeClients(t)
	s := openTest(t, c)
	if _, err := s.Patch(ctx, "test", serviceRef, selectorPath, retarget); err != nil {
		t.Fatal(err)
	}
	bad := patchedData{Object: serviceRef, Fields: []FieldChange{{Path: nil, Original: []byte(`1`)}}}
	if _, err := s.Record(ctx, KindPatched, "test", "ns", bad); err != nil {
		t.Fatal(err)
	}
	_, err := s.Close(ctx, CloseOptions{})
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("err = %v, want ErrCorrupt", err)
	}
	if got := selector(t, c); got["app"] != "interceptor" {
		t.Fatalf("a refused close changed the Service: %v", got)
	}
}

// A create the API server refuses leaves no entry behind to block a close.
func TestRefusedCreateLeavesNoEntry(t *testing.T) {
	ctx := context.Background()
	c, kube := fakeClients(t)
	s := openTest(t, c)
	if _, err := c.Dynamic.Resource(configMapsGVR).Namespace("ns").Create(ctx, newConfigMap("taken"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, "test", configMapsGVR, newConfigMap("taken")); err == nil {
		t.Fatal("creating an existing object succeeded")
	}
	cm, err := kube.CoreV1().ConfigMaps("ns").Get(ctx, JournalName(s.ID()), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, entries, err := decodeJournal(cm.Data); err != nil || len(entries) != 0 {
		t.Fatalf("entries after a refused create: %+v %v", entries, err)
	}
}
