package session

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
)

var (
	batchUndoneMu sync.Mutex
	batchUndone   []string
)

func init() {
	RegisterKind(Kind{Name: "test.batch", Local: true, Undo: func(_ context.Context, u *UndoContext, e Entry) error {
		batchUndoneMu.Lock()
		defer batchUndoneMu.Unlock()
		batchUndone = append(batchUndone, string(e.Data))
		fmt.Fprintf(u.Log, "undid %s\n", e.Data)
		return nil
	}, Many: func(n int) string { return fmt.Sprintf("undid %d of them", n) }})
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

// A kind that says many in one keeps its own lines for a few entries, and
// says one line for many.
func TestManyUndoneSayOneLine(t *testing.T) {
	ctx := context.Background()
	for _, n := range []int{3, manyLines + 2} {
		c, _ := fakeClients(t)
		s := openTest(t, c)
		data := make([]any, n)
		for i := range data {
			data[i] = i
		}
		entries, err := s.RecordLocal("test.batch", "test", data)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.AppliedLocal(entries); err != nil {
			t.Fatal(err)
		}
		var log bytes.Buffer
		if _, err := s.Close(ctx, CloseOptions{Log: &log}); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(log.String()), "\n")
		switch {
		case n <= manyLines && len(lines) != n:
			t.Errorf("%d undone: %d lines, want one each:\n%s", n, len(lines), log.String())
		case n > manyLines && (len(lines) != 1 || lines[0] != fmt.Sprintf("undid %d of them", n)):
			t.Errorf("%d undone: want one summary line, got:\n%s", n, log.String())
		}
	}
}
