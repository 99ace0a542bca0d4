package session

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// A journal is input: anyone who may create ConfigMaps can write one that
// looks like ours, hoping that an administrator's close or gc applies it
// with the administrator's rights. Each forged journal below must be
// refused in one line, before anything changes.

func init() {
	RegisterKind(Kind{Name: "test.local", Local: true, Undo: func(context.Context, *UndoContext, Entry) error {
		panic("a laptop-side entry from a cluster journal was undone")
	}})
}

// forge writes a journal ConfigMap by hand, as a tenant would.
func forge(t *testing.T, c Clients, ns, id string, entries ...Entry) {
	t.Helper()
	meta, _ := json.Marshal(Meta{Version: journalVersion, ID: id, Owner: Owner{User: "mallory"}, Created: time.Now()})
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: JournalName(id), Namespace: ns,
		Labels: map[string]string{LabelManagedBy: ManagedBy, LabelSession: id}}, Data: map[string]string{metaKey: string(meta)}}
	for i, e := range entries {
		e.Seq = int64(i + 1)
		e.State = Applied
		if e.Namespace == "" && e.Kind != "test.local" {
			e.Namespace = ns
		}
		if err := encodeEntry(cm, e); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Kube.CoreV1().ConfigMaps(ns).Create(context.Background(), cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func raw(t *testing.T, v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestForgedJournalsChangeNothing(t *testing.T) {
	svc := serviceRef
	svc.UID = "svc-uid"
	stolen := []FieldChange{{Path: []string{"spec", "selector"}, Original: []byte(`{"app":"mallory"}`), Patched: []byte(`{"app":"core"}`)}}
	otherNS := svc
	otherNS.Namespace = "kube-system"
	for _, tc := range []struct {
		name, want string
		entry      Entry
	}{
		{"a patch the object carries no mark of", "does not carry this session's mark",
			Entry{Kind: KindPatched, Primitive: "test", Data: raw(t, patchedData{Object: svc, Fields: stolen})}},
		{"a patch of another namespace's object", "not in the journal's namespace",
			Entry{Kind: KindPatched, Primitive: "test", Data: raw(t, patchedData{Object: otherNS, Fields: stolen})}},
		{"a patch of a field the primitive never sets", "does not patch field metadata.labels",
			Entry{Kind: KindPatched, Primitive: "test", Data: raw(t, patchedData{Object: svc, Fields: []FieldChange{{Path: []string{"metadata", "labels"}, Original: []byte(`{}`)}}})}},
		{"a patch without the object's UID", "without its UID",
			Entry{Kind: KindPatched, Primitive: "test", Data: raw(t, patchedData{Object: serviceRef, Fields: stolen})}},
		{"a primitive that declares nothing", `primitive "mallory" declares no objects`,
			Entry{Kind: KindPatched, Primitive: "mallory", Data: raw(t, patchedData{Object: svc, Fields: stolen})}},
		{"a deletion of a resource the primitive never creates", "does not create services",
			Entry{Kind: KindCreated, Primitive: "test", Data: raw(t, createdData{Object: svc})}},
		{"an entry for another namespace", "is for namespace",
			Entry{Kind: KindCreated, Primitive: "test", Namespace: "kube-system", Data: raw(t, createdData{Object: otherNS})}},
		{"a laptop-side kind", "only this machine's local journal",
			Entry{Kind: "test.local", Primitive: "test", Namespace: "ns"}},
		{"an unknown kind", "cannot undo",
			Entry{Kind: "shell.exec", Primitive: "test", Data: raw(t, map[string]string{"cmd": "rm -rf ~"})}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			c, _ := fakeClients(t)
			forge(t, c, "ns", "forged", tc.entry)
			loaded, err := Load(ctx, c, "forged", []string{"ns"}, "")
			if err == nil {
				_, err = loaded.Close(ctx, CloseOptions{Force: true})
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err = %v: want one line saying %q", err, tc.want)
			}
			if got := selector(t, c); len(got) != 1 || got["app"] != "core" {
				t.Fatalf("the forged journal changed the Service's selector to %v", got)
			}
			if _, err := c.Dynamic.Resource(servicesGVR).Namespace("ns").Get(ctx, "core", metav1.GetOptions{}); err != nil {
				t.Fatalf("the forged journal deleted the Service: %v", err)
			}
		})
	}
}

// An object the forged journal names, of a resource the primitive does
// create, but that the journal does not own, is kept.
func TestForgedCreatedEntryKeepsAnObjectItDoesNotOwn(t *testing.T) {
	ctx := context.Background()
	c, _ := fakeClients(t)
	victim, err := c.Dynamic.Resource(configMapsGVR).Namespace("ns").Create(ctx, newConfigMap("victim"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ref := ObjectRef{Version: "v1", Resource: "configmaps", Kind: "ConfigMap", Namespace: "ns", Name: "victim", UID: victim.GetUID()}
	forge(t, c, "ns", "forged", Entry{Kind: KindCreated, Primitive: "test", Data: raw(t, createdData{Object: ref})})
	loaded, err := Load(ctx, c, "forged", []string{"ns"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := loaded.Close(ctx, CloseOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Dynamic.Resource(configMapsGVR).Namespace("ns").Get(ctx, "victim", metav1.GetOptions{}); err != nil {
		t.Fatalf("a journal that does not own it had it deleted: %v", err)
	}
}

// The mark goes with the restore: the object comes back without it.
func TestPatchMarksAndRestoreRemovesTheMark(t *testing.T) {
	ctx := context.Background()
	c, _ := fakeClients(t)
	s := openTest(t, c)
	u, err := s.Patch(ctx, "test", serviceRef, selectorPath, retarget)
	if err != nil {
		t.Fatal(err)
	}
	if u.GetAnnotations()[AnnotationJournal] == "" {
		t.Fatal("the patched object carries no mark")
	}
	if _, err := s.Close(ctx, CloseOptions{}); err != nil {
		t.Fatal(err)
	}
	got, _ := c.Dynamic.Resource(servicesGVR).Namespace("ns").Get(ctx, "core", metav1.GetOptions{})
	if a, found, _ := unstructured.NestedStringMap(got.Object, "metadata", "annotations"); len(a) != 0 {
		t.Fatalf("annotations after the restore: %v (found %v)", a, found)
	}
}

// Someone who may edit the real journal changes the original it records:
// the object's mark hashes the entry as written, so the close refuses it.
func TestEditedJournalEntryIsRefused(t *testing.T) {
	ctx := context.Background()
	c, kube := fakeClients(t)
	s := openTest(t, c)
	if _, err := s.Patch(ctx, "test", serviceRef, selectorPath, retarget); err != nil {
		t.Fatal(err)
	}
	cm, err := kube.CoreV1().ConfigMaps("ns").Get(ctx, JournalName(s.ID()), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range cm.Data {
		if strings.HasPrefix(k, entryKeyPrefix) {
			cm.Data[k] = strings.Replace(v, `{"app":"core"}`, `{"app":"mallory"}`, 1)
		}
	}
	if _, err := kube.CoreV1().ConfigMaps("ns").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	loaded, err := Load(ctx, c, s.ID(), []string{"ns"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := loaded.Close(ctx, CloseOptions{Force: true}); err == nil || !strings.Contains(err.Error(), "does not carry this session's mark") {
		t.Fatalf("close of an edited entry: %v", err)
	}
	if got := selector(t, c); got["app"] != "interceptor" {
		t.Fatalf("the edited entry set the selector to %v", got)
	}
}

// Text a journal carries reaches the screen without its control
// characters (a terminal escape in a forged entry).
func TestPrintable(t *testing.T) {
	if got := printable("dev \x1b[2J\x07ok\nnext"); got != "dev ?[2J?ok\nnext" {
		t.Errorf("printable: %q", got)
	}
}
