package session

import (
	"sync"
	"testing"
	"time"
)

// Two terminals joining one session on one machine share its local journal:
// their lines interleave without loss, and the first to finish does not
// remove the file while the other's entries are still in it.
func TestTwoTerminalsShareTheLocalJournal(t *testing.T) {
	dir := t.TempDir()
	meta := Meta{Version: journalVersion, ID: "shared", Created: time.Now()}
	a, err := createLocal(dir, meta)
	if err != nil {
		t.Fatal(err)
	}
	b, err := createLocal(dir, meta)
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	var wg sync.WaitGroup
	for i, lj := range []*localJournal{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < n; k++ {
				e := Entry{Seq: int64(i*n + k + 1), Kind: "test.local", State: Recorded, Time: time.Now()}
				if err := lj.append(localLine{Record: &e}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	loaded, err := loadLocal(localPath(dir, "shared"))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(loaded.entries); got != 2*n {
		t.Fatalf("%d entries in the journal, want %d", got, 2*n)
	}
	var mine []int64
	for k := 0; k < n; k++ {
		mine = append(mine, int64(k+1))
	}
	if err := a.done(mine); err != nil {
		t.Fatal(err)
	}
	loaded, err = loadLocal(localPath(dir, "shared"))
	if err != nil {
		t.Fatalf("the first terminal's close took the second's entries with it: %v", err)
	}
	if got := len(loaded.entries); got != n {
		t.Fatalf("%d entries left, want the other terminal's %d", got, n)
	}
	var theirs []int64
	for k := 0; k < n; k++ {
		theirs = append(theirs, int64(n+k+1))
	}
	if err := b.done(theirs); err != nil {
		t.Fatal(err)
	}
	if _, err := loadLocal(localPath(dir, "shared")); err == nil {
		t.Fatal("the journal stays after every entry is done")
	}
}

func TestLocalJournalOfAnotherVersionIsRefused(t *testing.T) {
	_, err := decodeLocal("x.jsonl", []byte(`{"meta":{"version":2,"id":"abc","owner":{"user":"u","host":"h","pid":1},"created":"2026-01-01T00:00:00Z"}}`+"\n"))
	if err == nil {
		t.Fatal("a journal of another version was read")
	}
}
