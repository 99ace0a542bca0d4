package session

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultStateDir is where local journals live: $KUBECTL_CZ_STATE_DIR, else
// $XDG_STATE_HOME/kubectl-cz, else ~/.local/state/kubectl-cz.
func DefaultStateDir() string {
	if d := os.Getenv("KUBECTL_CZ_STATE_DIR"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "kubectl-cz")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "kubectl-cz")
	}
	return filepath.Join(home, ".local", "state", "kubectl-cz")
}

// localLine is one line of a local journal file: an append-only log, synced
// after every line, replayed on load.
type localLine struct {
	Meta    *Meta   `json:"meta,omitempty"`
	Record  *Entry  `json:"record,omitempty"`
	Applied *Entry  `json:"applied,omitempty"`
	Done    []int64 `json:"done,omitempty"`
}

// localJournal holds the laptop-side entries of a session.
type localJournal struct {
	path string
	meta Meta
	size int64 // bytes of whole lines, as loaded

	mu      sync.Mutex
	entries map[int64]Entry
}

func localPath(stateDir, id string) string {
	return filepath.Join(stateDir, "sessions", id+".jsonl")
}

// lockLocal holds the lock of a state folder's local journals: terminals
// that share a session append to one file, and one of them may find it
// empty and remove it; under the lock, none loses another's lines.
func lockLocal(path string) (unlock func(), err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("local session journal: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("local session journal lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("local session journal lock: %w", err)
	}
	return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}

func createLocal(stateDir string, meta Meta) (*localJournal, error) {
	if stateDir == "" {
		return nil, errors.New("no state directory for the local session journal")
	}
	path := localPath(stateDir, meta.ID)
	unlock, err := lockLocal(path)
	if err != nil {
		return nil, err
	}
	defer unlock()
	existing, err := loadLocal(path)
	switch {
	case err == nil:
		// Another terminal of the same session on this machine. A last line
		// cut short by a crash goes, so that new lines follow whole ones.
		if err := os.Truncate(path, existing.size); err != nil {
			return nil, fmt.Errorf("local session journal: %w", err)
		}
		return existing, nil
	case !os.IsNotExist(err):
		return nil, fmt.Errorf("%w (move it away to start the session afresh)", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("local session journal: %w", err)
	}
	lj := &localJournal{path: path, meta: meta, entries: map[int64]Entry{}}
	return lj, lj.appendLocked(localLine{Meta: &meta})
}

func (lj *localJournal) append(line localLine) error {
	return lj.appendAll([]localLine{line})
}

// appendAll writes lines at once: one lock, one write, one fsync (1,000
// addresses of a teleport were 2,000 fsyncs, a second of its start-up).
func (lj *localJournal) appendAll(lines []localLine) error {
	unlock, err := lockLocal(lj.path)
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := os.Stat(lj.path); os.IsNotExist(err) && lines[0].Meta == nil {
		// Another terminal of the session closed it meanwhile: start again.
		meta := lj.meta
		lines = append([]localLine{{Meta: &meta}}, lines...)
	}
	return lj.appendLocked(lines...)
}

// appendLocked writes lines; the caller holds the lock.
func (lj *localJournal) appendLocked(lines ...localLine) error {
	var buf []byte
	for _, line := range lines {
		b, err := json.Marshal(line)
		if err != nil {
			return err
		}
		buf = append(append(buf, b...), '\n')
	}
	lj.mu.Lock()
	defer lj.mu.Unlock()
	f, err := os.OpenFile(lj.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("local session journal: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("local session journal %s: %w", lj.path, err)
	}
	if _, err := f.Write(buf); err != nil {
		// A full disk may leave part of the lines: cut them off, so what
		// is appended next follows whole lines (the file stays readable).
		_ = f.Truncate(fi.Size())
		return fmt.Errorf("local session journal %s: %w", lj.path, err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Truncate(fi.Size())
		return fmt.Errorf("local session journal %s: %w", lj.path, err)
	}
	for _, line := range lines {
		lj.apply(line)
	}
	return nil
}

func (lj *localJournal) apply(line localLine) {
	switch {
	case line.Record != nil:
		lj.entries[line.Record.Seq] = *line.Record
	case line.Applied != nil:
		lj.entries[line.Applied.Seq] = *line.Applied
	}
	for _, seq := range line.Done {
		delete(lj.entries, seq)
	}
}

// touch updates the file's time: the local heartbeat.
func (lj *localJournal) touch() error {
	now := time.Now()
	return os.Chtimes(lj.path, now, now)
}

func (lj *localJournal) list() []Entry {
	lj.mu.Lock()
	defer lj.mu.Unlock()
	out := make([]Entry, 0, len(lj.entries))
	for _, e := range lj.entries {
		out = append(out, e)
	}
	sortEntries(out)
	return out
}

// done drops undone entries; the file goes when nothing is left in it,
// counting what other terminals of the session wrote meanwhile.
func (lj *localJournal) done(seqs []int64) error {
	unlock, err := lockLocal(lj.path)
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := os.Stat(lj.path); os.IsNotExist(err) {
		return nil // another terminal closed the session already
	}
	if len(seqs) > 0 {
		if err := lj.appendLocked(localLine{Done: seqs}); err != nil {
			return err
		}
	}
	current, err := loadLocal(lj.path)
	if err != nil {
		return err
	}
	lj.mu.Lock()
	lj.entries = current.entries
	lj.mu.Unlock()
	if len(current.entries) == 0 {
		if err := os.Remove(lj.path); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return nil
}

// loadLocalLocked reads a local journal under the lock, so a journal
// another terminal is creating is never read half-written.
func loadLocalLocked(path string) (*localJournal, error) {
	unlock, err := lockLocal(path)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return loadLocal(path)
}

// loadLocal replays a local journal. A last line cut short by a crash is
// ignored; anything else that does not decode is ErrCorrupt.
func loadLocal(path string) (*localJournal, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return decodeLocal(path, data)
}

func decodeLocal(path string, data []byte) (*localJournal, error) {
	lj := &localJournal{path: path, entries: map[int64]Entry{}, size: int64(len(data))}
	if i := bytes.LastIndexByte(data, '\n'); i+1 < len(data) {
		lj.size = int64(i + 1) // a torn last line does not count
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	n := 0
	for sc.Scan() {
		n++
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		var line localLine
		if err := strictUnmarshal(text, &line); err != nil {
			torn := !bytes.HasSuffix(data, []byte("\n")) && bytes.HasSuffix(data, []byte(sc.Text()))
			if torn {
				break
			}
			return nil, fmt.Errorf("%w: %s line %d: %v", ErrCorrupt, path, n, err)
		}
		if n == 1 {
			if line.Meta == nil {
				return nil, fmt.Errorf("%w: %s does not start with the session", ErrCorrupt, path)
			}
			if err := ValidateID(line.Meta.ID); err != nil {
				return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, path, err)
			}
			if line.Meta.Version != journalVersion {
				return nil, fmt.Errorf("%w: %s is journal version %d, this kubectl-cz reads version %d", ErrCorrupt, path, line.Meta.Version, journalVersion)
			}
			lj.meta = *line.Meta
			continue
		}
		for _, e := range []*Entry{line.Record, line.Applied} {
			if e == nil {
				continue
			}
			if err := e.validate(); err != nil {
				return nil, fmt.Errorf("%w: %s line %d: %v", ErrCorrupt, path, n, err)
			}
			if e.Namespace != "" {
				return nil, fmt.Errorf("%w: %s line %d: a cluster entry (namespace %s) in the local journal", ErrCorrupt, path, n, e.Namespace)
			}
		}
		lj.apply(line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, path, err)
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: %s is empty", ErrCorrupt, path)
	}
	return lj, nil
}

// localSessions lists the local journals of this machine.
func localSessions(stateDir string) ([]*localJournal, []error) {
	paths, _ := filepath.Glob(filepath.Join(stateDir, "sessions", "*.jsonl"))
	var out []*localJournal
	var errs []error
	for _, p := range paths {
		lj, err := loadLocalLocked(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, lj)
	}
	return out, errs
}
