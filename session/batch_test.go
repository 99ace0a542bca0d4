package session

import (
	"context"
	"sync"
	"testing"
)

var (
	batchUndoneMu sync.Mutex
	batchUndone   []string
)

func init() {
	RegisterKind(Kind{Name: "test.batch", Local: true, Undo: func(_ context.Context, _ *UndoContext, e Entry) error {
		batchUndoneMu.Lock()
		defer batchUndoneMu.Unlock()
		batchUndone = append(batchUndone, string(e.Data))
		return nil
	}})
}

// Many local changes are journaled in one write each way, and are undone
// like those recorded one by one.
func TestRecordLocalIsOneWriteAndUndoes(t *testing.T) {
	ctx := context.Background()
	c, _ := fakeClients(t)
	s := openTest(t, c)
	data := []any{"a", "b", "c"}
	entries, err := s.RecordLocal("test.batch", "test", data)
	if err != nil || len(entries) != 3 {
		t.Fatalf("%d entries, %v", len(entries), err)
	}
	lj, err := s.localJournal()
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := loadLocal(lj.path)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if got, ok := loaded.entries[e.Seq]; !ok || got.State != Recorded {
			t.Fatalf("entry %d on disk: %+v %v", e.Seq, got, ok)
		}
	}
	if err := s.AppliedLocal(entries[:2]); err != nil {
		t.Fatal(err)
	}
	if loaded, err = loadLocal(lj.path); err != nil {
		t.Fatal(err)
	}
	if loaded.entries[entries[0].Seq].State != Applied || loaded.entries[entries[2].Seq].State != Recorded {
		t.Fatalf("after AppliedLocal of two: %+v", loaded.entries)
	}
	batchUndone = nil
	if _, err := s.Close(ctx, CloseOptions{}); err != nil {
		t.Fatal(err)
	}
	if len(batchUndone) != 3 {
		t.Fatalf("undone %v, want all three (a recorded one too: it may have happened)", batchUndone)
	}
}
