package session

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// clusterJournal is a session's ConfigMap in one namespace. It keeps the
// last version it wrote, so a write is one Update call carrying that
// resourceVersion; only when someone else wrote in between (another terminal
// of the same session, a heartbeat) does it read again and retry.
type clusterJournal struct {
	client    kubernetes.Interface
	namespace string
	meta      Meta

	mu sync.Mutex
	cm *corev1.ConfigMap // nil until created
}

// mutate applies change to the journal and writes it, creating the
// ConfigMap on first use. change must be safe to run again on a fresher copy.
func (j *clusterJournal) mutate(ctx context.Context, change func(*corev1.ConfigMap) error) error {
	return j.write(ctx, true, change)
}

// touch changes an existing journal only: a heartbeat or a discard must not
// bring back a journal that a close deleted.
func (j *clusterJournal) touch(ctx context.Context, change func(*corev1.ConfigMap) error) error {
	return j.write(ctx, false, change)
}

func (j *clusterJournal) write(ctx context.Context, create bool, change func(*corev1.ConfigMap) error) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	cms := j.client.CoreV1().ConfigMaps(j.namespace)
	for attempt := 0; attempt < 10; attempt++ {
		if j.cm == nil && !create {
			return nil
		}
		if j.cm == nil {
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
				Name:      JournalName(j.meta.ID),
				Namespace: j.namespace,
				Labels:    map[string]string{LabelManagedBy: ManagedBy, LabelSession: j.meta.ID},
				Annotations: map[string]string{
					AnnotationOwner: fmt.Sprintf("%s pid %d", j.meta.Owner, j.meta.Owner.PID),
					AnnotationBeat:  time.Now().UTC().Format(time.RFC3339),
				},
			}}
			if err := encodeMeta(cm, j.meta); err != nil {
				return err
			}
			if err := change(cm); err != nil {
				return err
			}
			created, err := cms.Create(ctx, cm, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				// Another terminal joined the same session first: use its journal.
				if err := j.refresh(ctx); err != nil {
					return err
				}
				continue
			}
			if err != nil {
				return journalError("create", j.namespace, j.meta.ID, err)
			}
			j.cm = created
			return nil
		}
		cm := j.cm.DeepCopy()
		if err := change(cm); err != nil {
			return err
		}
		updated, err := cms.Update(ctx, cm, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			if err := j.refresh(ctx); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return journalError("update", j.namespace, j.meta.ID, err)
		}
		j.cm = updated
		return nil
	}
	return fmt.Errorf("session %s: the journal in namespace %s keeps changing under us; try again", j.meta.ID, j.namespace)
}

// refresh reads the journal again (nil if it is gone).
func (j *clusterJournal) refresh(ctx context.Context) error {
	cm, err := j.client.CoreV1().ConfigMaps(j.namespace).Get(ctx, JournalName(j.meta.ID), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		j.cm = nil
		return nil
	}
	if err != nil {
		return journalError("read", j.namespace, j.meta.ID, err)
	}
	j.cm = cm
	return nil
}

// uid is the journal ConfigMap's UID, for owner references (empty before it exists).
func (j *clusterJournal) ownerRef() *metav1.OwnerReference {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.cm == nil {
		return nil
	}
	return &metav1.OwnerReference{APIVersion: "v1", Kind: "ConfigMap", Name: j.cm.Name, UID: j.cm.UID}
}

// journalError turns an API error on the journal into one line that says
// what to do: RBAC is the common cause.
func journalError(verb, namespace, id string, err error) error {
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("cannot %s the session journal (ConfigMap %s/%s): forbidden; kubectl cz needs get, list, create, update and delete on configmaps in namespace %s",
			verb, namespace, JournalName(id), namespace)
	}
	return fmt.Errorf("cannot %s the session journal (ConfigMap %s/%s): %w", verb, namespace, JournalName(id), err)
}
