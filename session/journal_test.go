package session

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func validJournal() map[string]string {
	meta, _ := json.Marshal(Meta{Version: journalVersion, ID: "abc123", Owner: Owner{User: "alice", Host: "laptop", PID: 42}, Created: time.Unix(1e9, 0).UTC()})
	e, _ := json.Marshal(Entry{Seq: 7, Kind: KindCreated, State: Applied, Namespace: "ns", Data: json.RawMessage(`{"object":{"version":"v1","resource":"configmaps","kind":"ConfigMap","namespace":"ns","name":"x"}}`)})
	return map[string]string{metaKey: string(meta), "entry-7": string(e)}
}

func TestDecodeJournal(t *testing.T) {
	meta, entries, err := decodeJournal(validJournal())
	if err != nil {
		t.Fatal(err)
	}
	if meta.ID != "abc123" || meta.Owner.User != "alice" || len(entries) != 1 || entries[0].Seq != 7 {
		t.Fatalf("%+v %+v", meta, entries)
	}
}

func TestDecodeJournalRejectsGarbage(t *testing.T) {
	cases := map[string]func(map[string]string){
		"no meta":       func(d map[string]string) { delete(d, metaKey) },
		"bad meta":      func(d map[string]string) { d[metaKey] = "{not json" },
		"bad version":   func(d map[string]string) { d[metaKey] = strings.Replace(d[metaKey], `"version":1`, `"version":9`, 1) },
		"bad entry":     func(d map[string]string) { d["entry-7"] = "garbage" },
		"wrong seq key": func(d map[string]string) { d["entry-8"] = d["entry-7"]; delete(d, "entry-7") },
		"stray key":     func(d map[string]string) { d["hello"] = "world" },
		"unknown field": func(d map[string]string) {
			d["entry-7"] = strings.Replace(d["entry-7"], `{"seq"`, `{"evil":1,"seq"`, 1)
		},
		"bad state": func(d map[string]string) { d["entry-7"] = strings.Replace(d["entry-7"], `"applied"`, `"maybe"`, 1) },
	}
	for name, breakIt := range cases {
		d := validJournal()
		breakIt(d)
		if _, _, err := decodeJournal(d); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err = %v, want ErrCorrupt", name, err)
		}
	}
}

func FuzzDecodeJournal(f *testing.F) {
	v := validJournal()
	f.Add(v[metaKey], "entry-7", v["entry-7"])
	f.Add("{}", "entry-1", "{}")
	f.Add(`{"version":1,"id":"a"}`, "entry-1", `{"seq":1,"kind":"k","state":"recorded","data":null}`)
	f.Fuzz(func(t *testing.T, meta, key, entry string) {
		meta2, entries, err := decodeJournal(map[string]string{metaKey: meta, key: entry})
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error not marked corrupt: %v", err)
			}
			return
		}
		if ValidateID(meta2.ID) != nil {
			t.Fatalf("accepted id %q", meta2.ID)
		}
		for _, e := range entries {
			if e.validate() != nil {
				t.Fatalf("accepted entry %+v", e)
			}
		}
	})
}

func FuzzDecodeLocal(f *testing.F) {
	f.Add([]byte(`{"meta":{"version":1,"id":"abc","owner":{"user":"u","host":"h","pid":1},"created":"2026-01-01T00:00:00Z"}}` + "\n" +
		`{"record":{"seq":1,"kind":"k","state":"recorded","time":"2026-01-01T00:00:00Z","owner":{"user":"u","host":"h","pid":1}}}` + "\n"))
	f.Add([]byte("garbage\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		lj, err := decodeLocal("journal", data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error not marked corrupt: %v", err)
			}
			return
		}
		for _, e := range lj.list() {
			if e.validate() != nil {
				t.Fatalf("accepted entry %+v", e)
			}
		}
	})
}

func TestDecodeLocalToleratesTornLastLine(t *testing.T) {
	good := `{"meta":{"version":1,"id":"abc","owner":{"user":"u","host":"h","pid":1},"created":"2026-01-01T00:00:00Z"}}` + "\n" +
		`{"record":{"seq":1,"kind":"k","state":"recorded","time":"2026-01-01T00:00:00Z","owner":{"user":"u","host":"h","pid":1}}}` + "\n"
	lj, err := decodeLocal("j", []byte(good+`{"applied":{"seq":1,"ki`))
	if err != nil || len(lj.list()) != 1 || lj.list()[0].State != Recorded {
		t.Fatalf("torn tail: %v %+v", err, lj)
	}
	if _, err := decodeLocal("j", []byte(good+"garbage\n"+good)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("garbage in the middle: %v", err)
	}
}

func TestValidateID(t *testing.T) {
	for _, ok := range []string{"a", "alice-feature-1", strings.Repeat("a", maxSessionIDSize)} {
		if ValidateID(ok) != nil {
			t.Errorf("%q refused", ok)
		}
	}
	for _, bad := range []string{"", "Alice", "-a", "a-", "a_b", strings.Repeat("a", maxSessionIDSize+1)} {
		if ValidateID(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// Joining a session whose local journal ends in a torn line drops that line
// first, so the lines appended next keep the file readable.
func TestLocalJournalRepairsTornTailOnJoin(t *testing.T) {
	dir := t.TempDir()
	meta := Meta{Version: journalVersion, ID: "abc", Owner: Owner{User: "u", Host: "h", PID: 1}}
	lj, err := createLocal(dir, meta)
	if err != nil {
		t.Fatal(err)
	}
	if err := lj.append(localLine{Record: &Entry{Seq: 1, Kind: "k", State: Recorded}}); err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(lj.path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"applied":{"seq":1,"ki`)
	f.Close()
	again, err := createLocal(dir, meta)
	if err != nil {
		t.Fatal(err)
	}
	if err := again.append(localLine{Record: &Entry{Seq: 2, Kind: "k", State: Recorded}}); err != nil {
		t.Fatal(err)
	}
	back, err := loadLocal(lj.path)
	if err != nil || len(back.list()) != 2 {
		t.Fatalf("after join and append: %v %+v", err, back)
	}
	os.WriteFile(lj.path, []byte("garbage\n"+`{"meta":{}}`+"\n"), 0o600)
	if _, err := createLocal(dir, meta); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("joining a corrupt journal: %v", err)
	}
}
