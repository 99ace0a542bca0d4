// Package session keeps the write-ahead journal of a kubectl-cz session and
// restores what it records. A primitive records an entry describing a change
// and how to undo it before making the change, and marks it applied after.
// Closing a session undoes its entries in reverse order.
//
// Cluster-side entries live in one ConfigMap per session and namespace
// (cz-session-<id>), so any machine with the kubeconfig can close the
// session; laptop-side entries live in a local journal file. The package knows
// nothing of the primitives: each entry kind registers its own undo.
package session

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

const (
	// Labels and annotations of the journal ConfigMaps.
	LabelManagedBy  = "app.kubernetes.io/managed-by"
	ManagedBy       = "kubectl-cz"
	LabelSession    = "cz.dev/session"
	AnnotationBeat  = "cz.dev/heartbeat"
	AnnotationOwner = "cz.dev/owner"
	// AnnotationEntry marks an object the session created with its entry.
	AnnotationEntry  = "cz.dev/entry"
	journalPrefix    = "cz-session-"
	metaKey          = "session"
	entryKeyPrefix   = "entry-"
	journalVersion   = 1
	maxSessionIDSize = 63 - len(journalPrefix)
)

// State says how far an entry's change got.
type State string

const (
	// Recorded: the entry is stored, the change may or may not have happened.
	Recorded State = "recorded"
	// Applied: the change happened.
	Applied State = "applied"
)

// Owner is who opened a session: the cluster user, and the machine and
// process that hold it open.
type Owner struct {
	User string `json:"user"`
	Host string `json:"host"`
	PID  int    `json:"pid"`
}

func (o Owner) String() string { return fmt.Sprintf("%s@%s", o.User, o.Host) }

// Meta describes a session; every journal of the session carries a copy.
type Meta struct {
	Version int       `json:"version"`
	ID      string    `json:"id"`
	Owner   Owner     `json:"owner"`
	Created time.Time `json:"created"`
	// Cluster is the API server URL, so a local journal names its cluster.
	Cluster string `json:"cluster,omitempty"`
}

// Entry is one recorded alteration.
type Entry struct {
	// Seq orders entries of a session across its journals; close undoes the
	// highest first.
	Seq       int64           `json:"seq"`
	Kind      string          `json:"kind"`
	Primitive string          `json:"primitive,omitempty"`
	Namespace string          `json:"namespace,omitempty"` // empty: a laptop-side entry
	State     State           `json:"state"`
	Time      time.Time       `json:"time"`
	Owner     Owner           `json:"owner"`
	Data      json.RawMessage `json:"data,omitempty"`
}

func (e Entry) key() string { return entryKeyPrefix + strconv.FormatInt(e.Seq, 10) }

// JournalName is the ConfigMap that holds a session's entries for a namespace.
func JournalName(id string) string { return journalPrefix + id }

var idPattern = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// ValidateID checks that a session name can be part of a ConfigMap name.
func ValidateID(id string) error {
	if len(id) == 0 || len(id) > maxSessionIDSize || !idPattern.MatchString(id) {
		return fmt.Errorf("invalid session name %q: use at most %d lowercase letters, digits and '-', starting and ending with a letter or digit", id, maxSessionIDSize)
	}
	return nil
}

// ErrCorrupt marks a journal that cannot be decoded; nothing is undone from it.
var ErrCorrupt = errors.New("corrupt session journal")

// decodeJournal reads a journal ConfigMap's data. Any problem is an
// ErrCorrupt naming the key, never a panic: the ConfigMap may have been
// edited by hand.
func decodeJournal(data map[string]string) (Meta, []Entry, error) {
	var meta Meta
	raw, ok := data[metaKey]
	if !ok {
		return meta, nil, fmt.Errorf("%w: no %q key", ErrCorrupt, metaKey)
	}
	if err := strictUnmarshal(raw, &meta); err != nil {
		return meta, nil, fmt.Errorf("%w: key %q: %v", ErrCorrupt, metaKey, err)
	}
	if meta.Version != journalVersion {
		return meta, nil, fmt.Errorf("%w: journal version %d, this kubectl-cz reads version %d", ErrCorrupt, meta.Version, journalVersion)
	}
	if err := ValidateID(meta.ID); err != nil {
		return meta, nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	var entries []Entry
	for key, raw := range data {
		if key == metaKey {
			continue
		}
		seqText, ok := strings.CutPrefix(key, entryKeyPrefix)
		if !ok {
			return meta, nil, fmt.Errorf("%w: unexpected key %q", ErrCorrupt, key)
		}
		var e Entry
		if err := strictUnmarshal(raw, &e); err != nil {
			return meta, nil, fmt.Errorf("%w: key %q: %v", ErrCorrupt, key, err)
		}
		if err := e.validate(); err != nil {
			return meta, nil, fmt.Errorf("%w: key %q: %v", ErrCorrupt, key, err)
		}
		if strconv.FormatInt(e.Seq, 10) != seqText {
			return meta, nil, fmt.Errorf("%w: key %q holds entry %d", ErrCorrupt, key, e.Seq)
		}
		entries = append(entries, e)
	}
	sortEntries(entries)
	return meta, entries, nil
}

func (e Entry) validate() error {
	if e.Seq <= 0 {
		return fmt.Errorf("entry sequence %d", e.Seq)
	}
	if e.Kind == "" {
		return errors.New("entry without a kind")
	}
	if e.State != Recorded && e.State != Applied {
		return fmt.Errorf("entry state %q", e.State)
	}
	return nil
}

func strictUnmarshal(raw string, v any) error {
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

// encodeEntry stores an entry into a journal's data.
func encodeEntry(cm *corev1.ConfigMap, e Entry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[e.key()] = string(b)
	return nil
}

func encodeMeta(cm *corev1.ConfigMap, m Meta) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[metaKey] = string(b)
	return nil
}

// sortEntries orders entries by sequence, oldest first.
func sortEntries(entries []Entry) {
	sort.Slice(entries, func(i, j int) bool { return entries[i].Seq < entries[j].Seq })
}
