package session

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Clients are what a session talks to the cluster with.
type Clients struct {
	Kube    kubernetes.Interface
	Dynamic dynamic.Interface
	// Rest is the configuration the clients were made from, for undos that
	// must talk to an agent (port-forward); nil in unit tests.
	Rest *rest.Config
}

// Config opens a session.
type Config struct {
	Clients
	// ID joins an existing session by name; empty makes a new random one.
	ID      string
	Owner   Owner
	Cluster string // API server URL, recorded in the local journal
	// StateDir holds the local journals (see DefaultStateDir).
	StateDir string
	// AfterRecord and AfterApplied, when set, see each entry once it is
	// stored: progress reporting, and crash tests that stop the process there.
	AfterRecord, AfterApplied func(Entry)
}

// Session is an open session of this process: it records entries and, on
// Close, undoes the ones this process recorded.
type Session struct {
	meta     Meta
	clients  Clients
	stateDir string
	hooks    Config

	mu       sync.Mutex
	journals map[string]*clusterJournal // by namespace
	local    *localJournal
}

// Open starts (or, with Config.ID, joins) a session. Nothing is written
// until the first Record.
func Open(cfg Config) (*Session, error) {
	id := cfg.ID
	if id == "" {
		id = newID()
	}
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	if cfg.Owner.PID == 0 {
		cfg.Owner.PID = os.Getpid()
	}
	if cfg.Owner.Host == "" {
		cfg.Owner.Host, _ = os.Hostname()
	}
	return &Session{
		meta:     Meta{Version: journalVersion, ID: id, Owner: cfg.Owner, Created: time.Now().UTC().Truncate(time.Second), Cluster: cfg.Cluster},
		clients:  cfg.Clients,
		stateDir: cfg.StateDir,
		hooks:    Config{AfterRecord: cfg.AfterRecord, AfterApplied: cfg.AfterApplied},
		journals: map[string]*clusterJournal{},
	}, nil
}

// ID is the session's name, as `kubectl cz session` shows it.
func (s *Session) ID() string { return s.meta.ID }

// Meta describes the session.
func (s *Session) Meta() Meta { return s.meta }

const idAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

func newID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = idAlphabet[int(b[i])%len(idAlphabet)]
	}
	// A letter first keeps it readable as a name.
	b[0] = idAlphabet[int(b[0])%26]
	return string(b)
}

var lastSeq atomic.Int64

// nextSeq is strictly increasing within a process and follows the clock
// across processes, so entries of terminals sharing a session interleave in
// the order they were made.
func nextSeq() int64 {
	for {
		now, last := time.Now().UnixNano(), lastSeq.Load()
		if now <= last {
			now = last + 1
		}
		if lastSeq.CompareAndSwap(last, now) {
			return now
		}
	}
}

func (s *Session) journal(namespace string) *clusterJournal {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.journals[namespace]
	if !ok {
		j = &clusterJournal{client: s.clients.Kube, namespace: namespace, meta: s.meta}
		s.journals[namespace] = j
	}
	return j
}

func (s *Session) localJournal() (*localJournal, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.local == nil {
		lj, err := createLocal(s.stateDir, s.meta)
		if err != nil {
			return nil, err
		}
		s.local = lj
	}
	return s.local, nil
}

// Record stores an entry before its change is made: in the namespace's
// journal ConfigMap (one write), or, for an entry without a namespace, in the
// local journal. data is the kind's own description of the change and its undo.
func (s *Session) Record(ctx context.Context, kind, primitive, namespace string, data any) (Entry, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return Entry{}, err
	}
	e := Entry{Seq: nextSeq(), Kind: kind, Primitive: primitive, Namespace: namespace, State: Recorded,
		Time: time.Now().UTC(), Owner: s.meta.Owner, Data: raw}
	if namespace == "" {
		lj, err := s.localJournal()
		if err != nil {
			return Entry{}, err
		}
		err = lj.append(localLine{Record: &e})
		return e, s.after(s.hooks.AfterRecord, e, err)
	}
	err = s.journal(namespace).mutate(ctx, func(cm *corev1.ConfigMap) error { return encodeEntry(cm, e) })
	return e, s.after(s.hooks.AfterRecord, e, err)
}

// RecordLocal records many changes of this machine (a local kind, no
// namespace) in one write of the local journal: one fsync for them all.
func (s *Session) RecordLocal(kind, primitive string, data []any) ([]Entry, error) {
	if len(data) == 0 {
		return nil, nil
	}
	lj, err := s.localJournal()
	if err != nil {
		return nil, err
	}
	entries := make([]Entry, len(data))
	lines := make([]localLine, len(data))
	for i, d := range data {
		raw, err := json.Marshal(d)
		if err != nil {
			return nil, err
		}
		entries[i] = Entry{Seq: nextSeq(), Kind: kind, Primitive: primitive, State: Recorded,
			Time: time.Now().UTC(), Owner: s.meta.Owner, Data: raw}
		lines[i] = localLine{Record: &entries[i]}
	}
	err = lj.appendAll(lines)
	for _, e := range entries {
		if err = s.after(s.hooks.AfterRecord, e, err); err != nil {
			break
		}
	}
	return entries, err
}

// DiscardLocal forgets many local entries whose changes were not made, in
// one write.
func (s *Session) DiscardLocal(entries []Entry) error {
	if len(entries) == 0 {
		return nil
	}
	lj, err := s.localJournal()
	if err != nil {
		return err
	}
	seqs := make([]int64, len(entries))
	for i, e := range entries {
		seqs[i] = e.Seq
	}
	return lj.done(seqs)
}

// AppliedLocal marks many local entries' changes as made, in one write.
func (s *Session) AppliedLocal(entries []Entry) error {
	if len(entries) == 0 {
		return nil
	}
	lj, err := s.localJournal()
	if err != nil {
		return err
	}
	lines := make([]localLine, len(entries))
	applied := make([]Entry, len(entries))
	for i, e := range entries {
		if e.Namespace != "" {
			return fmt.Errorf("entry %d of %s is not this machine's", e.Seq, e.Kind)
		}
		e.State = Applied
		applied[i] = e
		lines[i] = localLine{Applied: &applied[i]}
	}
	err = lj.appendAll(lines)
	for _, e := range applied {
		if err = s.after(s.hooks.AfterApplied, e, err); err != nil {
			break
		}
	}
	return err
}

func (s *Session) after(hook func(Entry), e Entry, err error) error {
	if err == nil && hook != nil {
		hook(e)
	}
	return err
}

// Applied marks an entry's change as made, replacing its data when the
// change taught something the undo needs (the UID of a created object, say).
func (s *Session) Applied(ctx context.Context, e Entry, data any) (Entry, error) {
	if data != nil {
		raw, err := json.Marshal(data)
		if err != nil {
			return e, err
		}
		e.Data = raw
	}
	e.State = Applied
	if e.Namespace == "" {
		lj, err := s.localJournal()
		if err != nil {
			return e, err
		}
		err = lj.append(localLine{Applied: &e})
		return e, s.after(s.hooks.AfterApplied, e, err)
	}
	err := s.journal(e.Namespace).mutate(ctx, func(cm *corev1.ConfigMap) error { return encodeEntry(cm, e) })
	return e, s.after(s.hooks.AfterApplied, e, err)
}

// OwnerReference points at the session's journal in a namespace, creating
// the journal if needed: objects the session creates carry it, so deleting
// the journal lets Kubernetes' garbage collector remove them.
func (s *Session) OwnerReference(ctx context.Context, namespace string) (metav1.OwnerReference, error) {
	j := s.journal(namespace)
	if ref := j.ownerRef(); ref != nil {
		return *ref, nil
	}
	if err := j.mutate(ctx, func(*corev1.ConfigMap) error { return nil }); err != nil {
		return metav1.OwnerReference{}, err
	}
	if ref := j.ownerRef(); ref != nil {
		return *ref, nil
	}
	return metav1.OwnerReference{}, fmt.Errorf("session %s: no journal in namespace %s", s.meta.ID, namespace)
}

// Attach makes the session heartbeat an existing journal in namespace that
// another process created: a terminal that joins a session but records
// nothing still keeps it alive.
func (s *Session) Attach(ctx context.Context, namespace string) error {
	j := s.journal(namespace)
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.refresh(ctx)
}

// Heartbeat stamps every journal of the session with the current time, so
// `kubectl cz session gc` can tell a live session from an abandoned one.
func (s *Session) Heartbeat(ctx context.Context) error {
	s.mu.Lock()
	journals := make([]*clusterJournal, 0, len(s.journals))
	for _, j := range s.journals {
		journals = append(journals, j)
	}
	s.mu.Unlock()
	now := time.Now().UTC().Format(time.RFC3339)
	for _, j := range journals {
		if j.ownerRef() == nil {
			continue
		}
		if err := j.touch(ctx, func(cm *corev1.ConfigMap) error {
			if cm.Annotations == nil {
				cm.Annotations = map[string]string{}
			}
			cm.Annotations[AnnotationBeat] = now
			return nil
		}); err != nil {
			return err
		}
	}
	s.mu.Lock()
	local := s.local
	s.mu.Unlock()
	if local != nil {
		return local.touch()
	}
	return nil
}

// Discard removes an entry whose change is known not to have happened.
func (s *Session) Discard(ctx context.Context, e Entry) error {
	if e.Namespace == "" {
		lj, err := s.localJournal()
		if err != nil {
			return err
		}
		return lj.done([]int64{e.Seq})
	}
	return s.journal(e.Namespace).touch(ctx, func(cm *corev1.ConfigMap) error {
		delete(cm.Data, e.key())
		return nil
	})
}

// KeepAlive sends a heartbeat every interval until ctx ends. Errors are
// passed to report and do not stop it: a flaky network should not end a
// session.
func (s *Session) KeepAlive(ctx context.Context, interval time.Duration, report func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.Heartbeat(ctx); err != nil && report != nil && ctx.Err() == nil {
				report(err)
			}
		}
	}
}

// Close undoes, in reverse order, the entries this process recorded, and
// removes the journals that are left empty. Entries other terminals added
// to the same session stay.
func (s *Session) Close(ctx context.Context, opts CloseOptions) (*CloseResult, error) {
	s.mu.Lock()
	namespaces := make([]string, 0, len(s.journals))
	for ns := range s.journals {
		namespaces = append(namespaces, ns)
	}
	s.mu.Unlock()
	loaded, err := Load(ctx, s.clients, s.meta.ID, namespaces, s.stateDir)
	if err != nil {
		return nil, err
	}
	if loaded == nil {
		return &CloseResult{ID: s.meta.ID}, nil
	}
	me := s.meta.Owner
	opts.filter = func(e Entry) bool { return e.Owner.Host == me.Host && e.Owner.PID == me.PID }
	return loaded.Close(ctx, opts)
}
