package session

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

// The two cluster entry kinds every primitive uses.
const (
	KindCreated = "object.created"
	KindPatched = "object.patched"
)

func init() {
	RegisterKind(Kind{Name: KindCreated, Check: checkCreated, Undo: undoCreated, Describe: func(e Entry) Alteration {
		var d createdData
		_ = json.Unmarshal(e.Data, &d)
		return Alteration{Text: "created " + d.Object.String()}
	}})
	RegisterKind(Kind{Name: KindPatched, Check: checkPatched, Undo: undoPatched, Describe: func(e Entry) Alteration {
		var d patchedData
		_ = json.Unmarshal(e.Data, &d)
		var paths []string
		for _, f := range d.Fields {
			if !slices.Equal(f.Path, markPath) { // the mark is ours, not the user's
				paths = append(paths, strings.Join(f.Path, "."))
			}
		}
		a := Alteration{Text: fmt.Sprintf("patched %s: %s", d.Object, strings.Join(paths, ", "))}
		if d.Object.Resource == "services" && d.Object.Group == "" {
			a.Service = d.Object.Name
			if sc, ok := scopeOf(e.Primitive); ok {
				a.Role = sc.PatchRole
			}
		}
		return a
	}})
}

// AnnotationJournal marks an object the session patched with the UID of the
// journal that recorded the patch. Restoring needs it: a journal someone
// wrote by hand cannot make a close change an object it never altered,
// since writing the mark takes the right to update the object itself.
const AnnotationJournal = "cz.dev/journal"

var markPath = []string{"metadata", "annotations", AnnotationJournal}

// ObjectRef names a cluster object.
type ObjectRef struct {
	Group     string    `json:"group,omitempty"`
	Version   string    `json:"version"`
	Resource  string    `json:"resource"`
	Kind      string    `json:"kind"`
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	UID       types.UID `json:"uid,omitempty"`
}

func (r ObjectRef) gvr() schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: r.Group, Version: r.Version, Resource: r.Resource}
}

func (r ObjectRef) String() string {
	return fmt.Sprintf("%s %s/%s", strings.ToLower(r.Kind), r.Namespace, r.Name)
}

// createdData is a KindCreated entry: the object, and its UID once created.
type createdData struct {
	Object ObjectRef `json:"object"`
}

// Create records, then creates obj (of resource gvr) with an owner reference
// to the session's journal, then marks the entry applied with the new UID.
func (s *Session) Create(ctx context.Context, primitive string, gvr schema.GroupVersionResource, obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	ns := obj.GetNamespace()
	owner, err := s.OwnerReference(ctx, ns)
	if err != nil {
		return nil, err
	}
	ref := ObjectRef{Group: gvr.Group, Version: gvr.Version, Resource: gvr.Resource, Kind: obj.GetKind(), Namespace: ns, Name: obj.GetName()}
	e, err := s.Record(ctx, KindCreated, primitive, ns, createdData{Object: ref})
	if err != nil {
		return nil, err
	}
	obj = obj.DeepCopy()
	obj.SetOwnerReferences(append(obj.GetOwnerReferences(), owner))
	// The entry's number on the object tells it apart from one another
	// process of the same session creates under that name.
	annotations := obj.GetAnnotations()
	if annotations == nil {
		annotations = map[string]string{}
	}
	annotations[AnnotationEntry] = strconv.FormatInt(e.Seq, 10)
	obj.SetAnnotations(annotations)
	created, err := s.clients.Dynamic.Resource(gvr).Namespace(ns).Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		s.discardIfRefused(e, err)
		return nil, objectError("create", ref, err)
	}
	ref.UID = created.GetUID()
	if _, err := s.Applied(ctx, e, createdData{Object: ref}); err != nil {
		return created, err
	}
	return created, nil
}

// undoCreated deletes the object if it is the one the session created:
// owned by the session's journal, and with the UID recorded (or, when the
// session crashed before learning the UID, marked with this entry).
// Anything else of that name is left alone: a journal that names an object
// it does not own cannot have it deleted.
func undoCreated(ctx context.Context, u *UndoContext, e Entry) error {
	var d createdData
	if err := json.Unmarshal(e.Data, &d); err != nil {
		return fmt.Errorf("entry %d: %w: %v", e.Seq, ErrCorrupt, err)
	}
	ref := d.Object
	res := u.Dynamic.Resource(ref.gvr()).Namespace(ref.Namespace)
	obj, err := res.Get(ctx, ref.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return objectError("read", ref, err)
	}
	owned := false
	for _, o := range obj.GetOwnerReferences() {
		owned = owned || (u.Journal != nil && o.Kind == "ConfigMap" && o.Name == u.Journal.Name && o.UID == u.Journal.UID)
	}
	ours := owned && ((ref.UID != "" && obj.GetUID() == ref.UID) ||
		(ref.UID == "" && obj.GetAnnotations()[AnnotationEntry] == strconv.FormatInt(e.Seq, 10)))
	if !ours {
		fmt.Fprintf(u.Log, "kept %s: it is not the object this session created\n", ref)
		return nil
	}
	uid := obj.GetUID()
	err = res.Delete(ctx, ref.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return objectError("delete", ref, err)
	}
	fmt.Fprintf(u.Log, "deleted %s\n", ref)
	return nil
}

// FieldChange is one patched field: its path in the object, and its value
// before and after the session's patch (absent when the field was not set).
type FieldChange struct {
	Path     []string        `json:"path"`
	Original json.RawMessage `json:"original,omitempty"`
	Patched  json.RawMessage `json:"patched,omitempty"`
}

// patchedData is a KindPatched entry: the full original value of every
// field the session changes, and what it changed them to.
type patchedData struct {
	Object ObjectRef     `json:"object"`
	Fields []FieldChange `json:"fields"`
}

// Patch reads the object, lets mutate change it, records the original and
// new values of the given fields, and only then writes the object. Only the
// listed fields may differ; the write carries the resourceVersion read, so a
// concurrent change is never overwritten.
func (s *Session) Patch(ctx context.Context, primitive string, ref ObjectRef, fields [][]string, mutate func(*unstructured.Unstructured) error) (*unstructured.Unstructured, error) {
	journal, err := s.OwnerReference(ctx, ref.Namespace)
	if err != nil {
		return nil, err
	}
	res := s.clients.Dynamic.Resource(ref.gvr()).Namespace(ref.Namespace)
	obj, err := res.Get(ctx, ref.Name, metav1.GetOptions{})
	if err != nil {
		return nil, objectError("read", ref, err)
	}
	ref.UID = obj.GetUID()
	next := obj.DeepCopy()
	if err := mutate(next); err != nil {
		return nil, err
	}
	d := patchedData{Object: ref}
	for _, path := range fields {
		before, err := fieldJSON(obj, path)
		if err != nil {
			return nil, err
		}
		after, err := fieldJSON(next, path)
		if err != nil {
			return nil, err
		}
		d.Fields = append(d.Fields, FieldChange{Path: path, Original: before, Patched: after})
	}
	// The mark names the journal and hashes what the entry records, so
	// neither another journal nor an edited entry can restore through it.
	before, err := fieldJSON(obj, markPath)
	if err != nil {
		return nil, err
	}
	if err := unstructured.SetNestedField(next.Object, mark(journal.UID, d.Fields), markPath...); err != nil {
		return nil, err
	}
	after, _ := fieldJSON(next, markPath)
	d.Fields = append(d.Fields, FieldChange{Path: markPath, Original: before, Patched: after})
	e, err := s.Record(ctx, KindPatched, primitive, ref.Namespace, d)
	if err != nil {
		return nil, err
	}
	updated, err := res.Update(ctx, next, metav1.UpdateOptions{})
	if err != nil {
		s.discardIfRefused(e, err)
		return nil, objectError("update", ref, err)
	}
	if _, err := s.Applied(ctx, e, nil); err != nil {
		return updated, err
	}
	return updated, nil
}

// discardIfRefused drops an entry whose change the API server refused (a
// status answer such as Conflict, Forbidden, AlreadyExists): that change
// never happened, and its entry must not stand in the way of a close. After
// a timeout or a broken connection the outcome is unknown, so the entry stays.
func (s *Session) discardIfRefused(e Entry, err error) {
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		_ = s.Discard(context.Background(), e)
	}
}

// checkCreated and checkPatched validate an entry's data before any undo
// runs, so a hand-edited journal fails the close before it changes anything.
func checkCreated(e Entry) error {
	var d createdData
	if err := strictUnmarshal(string(e.Data), &d); err != nil {
		return err
	}
	if err := d.Object.validate(); err != nil {
		return err
	}
	if e.State == Applied && d.Object.UID == "" {
		return fmt.Errorf("an applied entry without the UID of %s", d.Object)
	}
	return inScope(e, d.Object, nil)
}

func checkPatched(e Entry) error {
	var d patchedData
	if err := strictUnmarshal(string(e.Data), &d); err != nil {
		return err
	}
	if err := d.Object.validate(); err != nil {
		return err
	}
	if d.Object.UID == "" {
		return fmt.Errorf("a patch of %s without its UID", d.Object)
	}
	if len(d.Fields) == 0 {
		return errors.New("a patch entry without fields")
	}
	paths := make([][]string, 0, len(d.Fields))
	for _, f := range d.Fields {
		paths = append(paths, f.Path)
	}
	if err := inScope(e, d.Object, paths); err != nil {
		return err
	}
	for _, f := range d.Fields {
		if len(f.Path) == 0 {
			return errors.New("a field with an empty path")
		}
		for _, raw := range []json.RawMessage{f.Original, f.Patched} {
			var v any
			if raw != nil && decode(raw, &v) != nil {
				return fmt.Errorf("field %s: a value that is not JSON", strings.Join(f.Path, "."))
			}
		}
	}
	return nil
}

func (r ObjectRef) validate() error {
	if r.Version == "" || r.Resource == "" || r.Name == "" || r.Namespace == "" {
		return fmt.Errorf("an object reference without version, resource, namespace or name: %+v", r)
	}
	return nil
}

// fieldJSON is the JSON of the value at path, nil when absent.
func fieldJSON(obj *unstructured.Unstructured, path []string) (json.RawMessage, error) {
	v, found, err := unstructured.NestedFieldNoCopy(obj.Object, path...)
	if err != nil {
		return nil, fmt.Errorf("field %s: %w", strings.Join(path, "."), err)
	}
	if !found {
		return nil, nil
	}
	return json.Marshal(v)
}

// sameJSON compares two field values semantically (nil is absent).
func sameJSON(a, b json.RawMessage) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	var va, vb any
	if decode(a, &va) != nil || decode(b, &vb) != nil {
		return bytes.Equal(a, b)
	}
	return reflect.DeepEqual(va, vb)
}

func decode(raw json.RawMessage, v *any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	return dec.Decode(v)
}

// undoPatched puts the original values back. A field already at its
// original is fine (restore twice, or a crash before the patch); a field at
// neither the original nor the session's value was changed by someone else:
// a conflict, unless forced.
func undoPatched(ctx context.Context, u *UndoContext, e Entry) error {
	var d patchedData
	if err := json.Unmarshal(e.Data, &d); err != nil {
		return fmt.Errorf("entry %d: %w: %v", e.Seq, ErrCorrupt, err)
	}
	ref := d.Object
	res := u.Dynamic.Resource(ref.gvr()).Namespace(ref.Namespace)
	for attempt := 0; attempt < 5; attempt++ {
		obj, err := res.Get(ctx, ref.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			fmt.Fprintf(u.Log, "%s is gone: nothing to restore\n", ref)
			return nil
		}
		if err != nil {
			return objectError("read", ref, err)
		}
		if ref.UID != "" && obj.GetUID() != ref.UID {
			fmt.Fprintf(u.Log, "%s was deleted and created again since: left as it is\n", ref)
			return nil
		}
		if !marked(obj, u.Journal, d.Fields) && !atOriginal(obj, d.Fields) {
			return fmt.Errorf("%s does not carry this session's mark (annotation %s): it was not altered through this journal, so nothing is restored (a journal written by hand, or copied?)", ref, AnnotationJournal)
		}
		changed := false
		for _, f := range d.Fields {
			cur, err := fieldJSON(obj, f.Path)
			if err != nil {
				return err
			}
			switch {
			case sameJSON(cur, f.Original):
				continue
			case !sameJSON(cur, f.Patched) && !u.Force:
				return fmt.Errorf("%s: field %s %w (now %s, the session set %s, the original was %s); run close again with --force to put the original back",
					ref, strings.Join(f.Path, "."), ErrConflict, short(cur), short(f.Patched), short(f.Original))
			}
			if err := setField(obj, f); err != nil {
				return err
			}
			changed = true
		}
		if !changed {
			return nil
		}
		_, err = res.Update(ctx, obj, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) {
			continue
		}
		if err != nil {
			return objectError("restore", ref, err)
		}
		fmt.Fprintf(u.Log, "restored %s\n", ref)
		return nil
	}
	return fmt.Errorf("%s keeps changing; run close again", ref)
}

// mark is the annotation a patch leaves: the journal's UID and a hash of
// the fields it records (their paths, originals and new values).
func mark(journal types.UID, fields []FieldChange) string {
	b, _ := json.Marshal(fields)
	sum := sha256.Sum256(b)
	return string(journal) + "." + hex.EncodeToString(sum[:])
}

// marked: the object carries the mark of this journal and of this entry's
// fields exactly as they were recorded.
func marked(obj *unstructured.Unstructured, journal *metav1.OwnerReference, fields []FieldChange) bool {
	if journal == nil || journal.UID == "" {
		return false
	}
	var own []FieldChange
	for _, f := range fields {
		if !slices.Equal(f.Path, markPath) {
			own = append(own, f)
		}
	}
	return obj.GetAnnotations()[AnnotationJournal] == mark(journal.UID, own)
}

// atOriginal: every field holds its original value (nothing to restore).
func atOriginal(obj *unstructured.Unstructured, fields []FieldChange) bool {
	for _, f := range fields {
		cur, err := fieldJSON(obj, f.Path)
		if err != nil || !sameJSON(cur, f.Original) {
			return false
		}
	}
	return true
}

func setField(obj *unstructured.Unstructured, f FieldChange) error {
	if f.Original == nil {
		unstructured.RemoveNestedField(obj.Object, f.Path...)
		return nil
	}
	var v any
	if err := decode(f.Original, &v); err != nil {
		return fmt.Errorf("field %s: %w: %v", strings.Join(f.Path, "."), ErrCorrupt, err)
	}
	return unstructured.SetNestedField(obj.Object, v, f.Path...)
}

func short(raw json.RawMessage) string {
	if raw == nil {
		return "<absent>"
	}
	if len(raw) > 80 {
		return string(raw[:77]) + "..."
	}
	return string(raw)
}

// objectError is one line naming the object and, for RBAC, the permission.
func objectError(verb string, ref ObjectRef, err error) error {
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("cannot %s %s: forbidden; kubectl cz needs permission to %s %s in namespace %s", verb, ref, verb, ref.Resource, ref.Namespace)
	}
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("%s not found", ref)
	}
	return fmt.Errorf("cannot %s %s: %w", verb, ref, err)
}
