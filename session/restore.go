package session

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// UndoContext is what an undo gets to work with.
type UndoContext struct {
	Clients
	// Force overrides conflict checks: the original is put back even if
	// someone changed the object since the session did.
	Force bool
	// Journal is the session's journal ConfigMap in the entry's namespace
	// (name and UID), for ownership checks; nil for local entries.
	Journal *metav1.OwnerReference
	// Log reports what was done, for the user.
	Log io.Writer
}

// ErrConflict marks an object someone else changed since the session did.
var ErrConflict = errors.New("changed by someone else since the session altered it")

// loadedJournal is a journal ConfigMap as read for a close.
type loadedJournal struct {
	cm      *corev1.ConfigMap
	entries []Entry
}

// Loaded is a session read back from its journals, possibly on another
// machine than the one that opened it.
type Loaded struct {
	Meta     Meta
	clients  Clients
	journals []*loadedJournal
	local    *localJournal
}

// Load reads a session's journals in the given namespaces (all namespaces
// when namespaces is nil) and its local journal from stateDir. It returns
// nil, nil when there is no trace of the session. A journal that does not
// decode fails the whole load, so nothing is undone from a half-read session.
func Load(ctx context.Context, c Clients, id string, namespaces []string, stateDir string) (*Loaded, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	l := &Loaded{clients: c}
	found := false
	cms, err := listJournals(ctx, c, namespaces, LabelSession+"="+id)
	if err != nil {
		return nil, err
	}
	for i := range cms {
		cm := &cms[i]
		meta, entries, err := decodeJournal(cm.Data)
		if err != nil {
			return nil, corruptError(cm, err)
		}
		if meta.ID != id {
			return nil, corruptError(cm, fmt.Errorf("%w: it names session %q", ErrCorrupt, meta.ID))
		}
		for _, e := range entries {
			// A journal speaks for its own namespace only.
			if e.Namespace != cm.Namespace {
				return nil, corruptError(cm, fmt.Errorf("%w: entry %d is for namespace %q", ErrCorrupt, e.Seq, e.Namespace))
			}
		}
		l.Meta, found = meta, true
		l.journals = append(l.journals, &loadedJournal{cm: cm, entries: entries})
	}
	if stateDir != "" {
		lj, err := loadLocalLocked(localPath(stateDir, id))
		switch {
		case err == nil:
			l.local = lj
			if !found {
				l.Meta = lj.meta
			}
			found = true
		case !os.IsNotExist(err):
			return nil, fmt.Errorf("session %s: %w (move the file away to close the cluster side alone)", id, err)
		}
	}
	if !found {
		return nil, nil
	}
	return l, nil
}

func corruptError(cm *corev1.ConfigMap, err error) error {
	return fmt.Errorf("session journal ConfigMap %s/%s: %w; nothing was restored. Repair it by hand, or delete it (kubectl -n %s delete configmap %s), which also deletes the objects the session created",
		cm.Namespace, cm.Name, err, cm.Namespace, cm.Name)
}

// ForbiddenError says the user may not list journals where they were looked
// for; a caller can then look somewhere narrower.
type ForbiddenError struct{ msg string }

func (e *ForbiddenError) Error() string { return e.msg }

// listJournals lists journal ConfigMaps matching selector in namespaces (nil: all).
func listJournals(ctx context.Context, c Clients, namespaces []string, selector string) ([]corev1.ConfigMap, error) {
	selector = LabelManagedBy + "=" + ManagedBy + "," + selector
	if namespaces == nil {
		namespaces = []string{metav1.NamespaceAll}
	}
	var out []corev1.ConfigMap
	for _, ns := range namespaces {
		list, err := c.Kube.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			where := "namespace " + ns
			if ns == metav1.NamespaceAll {
				where = "all namespaces"
			}
			if apierrors.IsForbidden(err) {
				return nil, &ForbiddenError{msg: fmt.Sprintf("cannot list session journals (ConfigMaps) in %s: forbidden; kubectl cz needs list on configmaps there", where)}
			}
			return nil, fmt.Errorf("cannot list session journals (ConfigMaps) in %s: %w", where, err)
		}
		out = append(out, list.Items...)
	}
	return out, nil
}

// Entries lists every entry of the loaded session, oldest first.
func (l *Loaded) Entries() []Entry {
	var all []Entry
	for _, j := range l.journals {
		all = append(all, j.entries...)
	}
	if l.local != nil {
		all = append(all, l.local.list()...)
	}
	sortEntries(all)
	return all
}

// CloseOptions tune a close.
type CloseOptions struct {
	Force bool
	Log   io.Writer
	// LocalOnly undoes only laptop-side entries (crash recovery at start-up).
	LocalOnly bool
	filter    func(Entry) bool
}

// CloseResult says what a close did.
type CloseResult struct {
	ID       string
	Undone   int
	Left     int
	Journals int // journal ConfigMaps deleted
}

// Close undoes the session's entries, newest first. It stops at the first
// undo that fails (a conflict, a missing permission): entries older than it
// may depend on it. What was undone leaves the journals, what was not stays,
// so the close can be run again (with Force after a conflict).
func (l *Loaded) Close(ctx context.Context, opts CloseOptions) (*CloseResult, error) {
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	var todo []Entry
	for _, e := range l.Entries() {
		if opts.LocalOnly && e.Namespace != "" {
			continue
		}
		if opts.filter == nil || opts.filter(e) {
			todo = append(todo, e)
		}
	}
	// Check every entry before undoing anything: a journal is input anyone
	// with ConfigMap rights could have written.
	for _, e := range todo {
		if err := checkEntry(e); err != nil {
			return nil, fmt.Errorf("session %s: entry %d: %w; nothing was restored", l.Meta.ID, e.Seq, err)
		}
	}
	res := &CloseResult{ID: l.Meta.ID}
	done := map[int64]bool{}
	var undoErr error
	// The lines of kinds that say many in one are held until the count is
	// known.
	type held struct {
		lines bytes.Buffer
		n     int
	}
	many := map[string]*held{}
	var order []string
	for i := len(todo) - 1; i >= 0; i-- {
		e := todo[i]
		k := kindOf(e.Kind)
		u := &UndoContext{Clients: l.clients, Force: opts.Force, Log: opts.Log, Journal: l.journalRef(e.Namespace)}
		var h *held
		if k.Many != nil {
			if h = many[k.Name]; h == nil {
				h = &held{}
				many[k.Name] = h
				order = append(order, k.Name)
			}
			u.Log = &h.lines
		}
		if err := k.Undo(ctx, u, e); err != nil {
			undoErr = fmt.Errorf("session %s: %w", l.Meta.ID, err)
			break
		}
		if h != nil {
			h.n++
		}
		done[e.Seq] = true
		res.Undone++
	}
	for _, name := range order {
		if h := many[name]; h.n > manyLines {
			fmt.Fprintln(opts.Log, kindOf(name).Many(h.n))
		} else {
			_, _ = opts.Log.Write(h.lines.Bytes())
		}
	}
	res.Left = len(todo) - res.Undone
	if err := l.forget(ctx, done, opts, res); err != nil && undoErr == nil {
		undoErr = err
	}
	return res, undoErr
}

func (l *Loaded) journalRef(namespace string) *metav1.OwnerReference {
	for _, j := range l.journals {
		if j.cm.Namespace == namespace {
			return &metav1.OwnerReference{APIVersion: "v1", Kind: "ConfigMap", Name: j.cm.Name, UID: j.cm.UID}
		}
	}
	return nil
}

// forget removes undone entries from the journals: a journal left empty is
// deleted (only if nobody wrote to it meanwhile), otherwise it is updated.
func (l *Loaded) forget(ctx context.Context, done map[int64]bool, opts CloseOptions, res *CloseResult) error {
	if l.local != nil {
		var seqs []int64
		for _, e := range l.local.list() {
			if done[e.Seq] {
				seqs = append(seqs, e.Seq)
			}
		}
		if err := l.local.done(seqs); err != nil {
			return err
		}
	}
	if opts.LocalOnly {
		return nil
	}
	for _, j := range l.journals {
		if err := l.forgetIn(ctx, j, done); err != nil {
			return err
		}
		if remaining(j.cm, done) == 0 {
			res.Journals++
		}
	}
	return nil
}

func remaining(cm *corev1.ConfigMap, done map[int64]bool) int {
	n := 0
	for key := range cm.Data {
		if !strings.HasPrefix(key, entryKeyPrefix) {
			continue
		}
		var seq int64
		if _, err := fmt.Sscanf(key, entryKeyPrefix+"%d", &seq); err != nil || !done[seq] {
			n++
		}
	}
	return n
}

func (l *Loaded) forgetIn(ctx context.Context, j *loadedJournal, done map[int64]bool) error {
	cms := l.clients.Kube.CoreV1().ConfigMaps(j.cm.Namespace)
	for attempt := 0; attempt < 10; attempt++ {
		cm := j.cm
		if remaining(cm, done) == 0 {
			uid, rv := cm.UID, cm.ResourceVersion
			err := cms.Delete(ctx, cm.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv}})
			if err == nil || apierrors.IsNotFound(err) {
				return nil
			}
			if !apierrors.IsConflict(err) {
				return journalError("delete", cm.Namespace, l.Meta.ID, err)
			}
		} else {
			next := cm.DeepCopy()
			for key := range next.Data {
				var seq int64
				if _, err := fmt.Sscanf(key, entryKeyPrefix+"%d", &seq); err == nil && done[seq] {
					delete(next.Data, key)
				}
			}
			_, err := cms.Update(ctx, next, metav1.UpdateOptions{})
			if err == nil || apierrors.IsNotFound(err) {
				return nil
			}
			if !apierrors.IsConflict(err) {
				return journalError("update", cm.Namespace, l.Meta.ID, err)
			}
		}
		// Someone wrote meanwhile (another terminal, a heartbeat): read again.
		fresh, err := cms.Get(ctx, cm.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return journalError("read", cm.Namespace, l.Meta.ID, err)
		}
		j.cm = fresh
	}
	return fmt.Errorf("session %s: the journal in namespace %s keeps changing; run close again", l.Meta.ID, j.cm.Namespace)
}
