package session

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"syscall"
	"time"
)

// Summary is one session as `kubectl cz session list` shows it.
type Summary struct {
	ID         string    `json:"id"`
	Namespaces []string  `json:"namespaces"`
	Owner      Owner     `json:"owner"`
	Created    time.Time `json:"created"`
	Heartbeat  time.Time `json:"heartbeat"`
	Primitives []string  `json:"primitives"`
	Entries    int       `json:"entries"`
	Local      bool      `json:"local"` // has laptop-side entries on this machine
	Corrupt    string    `json:"corrupt,omitempty"`
}

// Age of the last heartbeat.
func (s Summary) Silence(now time.Time) time.Duration { return now.Sub(s.Heartbeat) }

// List summarizes the sessions whose journals are in namespaces (nil: all),
// and those with a local journal in stateDir. A journal that does not decode
// is listed with Corrupt set rather than failing the list.
func List(ctx context.Context, c Clients, namespaces []string, stateDir string) ([]Summary, error) {
	cms, err := listJournals(ctx, c, namespaces, LabelSession)
	if err != nil {
		return nil, err
	}
	byID := map[string]*Summary{}
	get := func(id string) *Summary {
		s, ok := byID[id]
		if !ok {
			s = &Summary{ID: id}
			byID[id] = s
		}
		return s
	}
	for i := range cms {
		cm := &cms[i]
		s := get(cm.Labels[LabelSession])
		s.Namespaces = append(s.Namespaces, cm.Namespace)
		if t, err := time.Parse(time.RFC3339, cm.Annotations[AnnotationBeat]); err == nil && t.After(s.Heartbeat) {
			s.Heartbeat = t
		}
		meta, entries, err := decodeJournal(cm.Data)
		if err != nil {
			s.Corrupt = fmt.Sprintf("%s/%s: %v", cm.Namespace, cm.Name, err)
			if s.Created.IsZero() {
				s.Created = cm.CreationTimestamp.Time
			}
			continue
		}
		s.Owner, s.Created = meta.Owner, meta.Created
		s.addEntries(entries)
	}
	if stateDir != "" {
		locals, _ := localSessions(stateDir)
		for _, lj := range locals {
			s := get(lj.meta.ID)
			s.Local = true
			if s.Owner.User == "" {
				s.Owner, s.Created = lj.meta.Owner, lj.meta.Created
			}
			if st, err := os.Stat(lj.path); err == nil && st.ModTime().After(s.Heartbeat) {
				s.Heartbeat = st.ModTime().UTC().Truncate(time.Second)
			}
			s.addEntries(lj.list())
		}
	}
	out := make([]Summary, 0, len(byID))
	for _, s := range byID {
		sort.Strings(s.Namespaces)
		sort.Strings(s.Primitives)
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

func (s *Summary) addEntries(entries []Entry) {
	s.Entries += len(entries)
	for _, e := range entries {
		p := e.Primitive
		if p == "" {
			continue
		}
		dup := false
		for _, have := range s.Primitives {
			dup = dup || have == p
		}
		if !dup {
			s.Primitives = append(s.Primitives, p)
		}
	}
}

// OwnerAlive is true when the owning process runs on this machine, false
// when it is known dead here, and unknown (ok=false) for another machine.
func OwnerAlive(o Owner) (alive, ok bool) {
	host, _ := os.Hostname()
	if o.Host != host || o.PID <= 0 {
		return false, false
	}
	err := syscall.Kill(o.PID, 0)
	return err == nil || errors.Is(err, syscall.EPERM), true
}

// RecoverLocal undoes the laptop-side entries of sessions whose owner
// process on this machine is gone: a crash left them behind. It runs when a
// kubectl cz command starts. Cluster-side entries stay for `session close`
// or `session gc`.
func RecoverLocal(ctx context.Context, c Clients, stateDir string, opts CloseOptions) ([]*CloseResult, error) {
	locals, errs := localSessions(stateDir)
	var results []*CloseResult
	opts.LocalOnly = true
	opts.filter = func(e Entry) bool {
		alive, known := OwnerAlive(e.Owner)
		return known && !alive
	}
	for _, lj := range locals {
		orphans := 0
		for _, e := range lj.list() {
			if opts.filter(e) {
				orphans++
			}
		}
		if orphans == 0 {
			continue
		}
		l := &Loaded{Meta: lj.meta, clients: c, local: lj}
		res, err := l.Close(ctx, opts)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		results = append(results, res)
	}
	return results, errors.Join(errs...)
}
