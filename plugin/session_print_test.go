package plugin

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/kubectl-cz/kubectl-cz/session"
)

// Listings print as kubectl prints a List: -o json is a SessionList with
// apiVersion and kind, -o name is kind.group/name, jsonpath reads fields.
func TestSessionListPrinters(t *testing.T) {
	views := []sessionView{
		{Summary: session.Summary{ID: "abc123", Namespaces: []string{"ns"}, Owner: session.Owner{User: "alice", Host: "lap", PID: 7}, Created: time.Unix(1700000000, 0), Primitives: []string{"intercept"}, Entries: 3}, State: "active"},
		{Summary: session.Summary{ID: "def456", Owner: session.Owner{User: "bob"}, Created: time.Unix(1700000000, 0), Local: true}, State: "abandoned"},
	}
	list, err := sessionList(views)
	if err != nil {
		t.Fatal(err)
	}
	out := func(format string) string {
		p, err := sessionPrinter(format)
		if err != nil || p == nil {
			t.Fatalf("%s: %v", format, err)
		}
		var b bytes.Buffer
		if err := p.PrintObj(list, &b); err != nil {
			t.Fatalf("%s: %v", format, err)
		}
		return b.String()
	}
	var decoded struct {
		APIVersion, Kind string
		Items            []struct {
			Kind     string
			Metadata struct{ Name string }
			Spec     struct{ Owner session.Owner }
			Status   struct {
				State   string
				Entries int
			}
		}
	}
	if err := json.Unmarshal([]byte(out("json")), &decoded); err != nil {
		t.Fatal(err)
	}
	if decoded.APIVersion != sessionAPIVersion || decoded.Kind != "SessionList" || len(decoded.Items) != 2 ||
		decoded.Items[0].Kind != "Session" || decoded.Items[0].Metadata.Name != "abc123" || decoded.Items[0].Spec.Owner.User != "alice" ||
		decoded.Items[0].Status.State != "active" || decoded.Items[0].Status.Entries != 3 {
		t.Fatalf("-o json: %+v", decoded)
	}
	if got := out("name"); got != "session.cz.dev/abc123\nsession.cz.dev/def456\n" {
		t.Errorf("-o name: %q", got)
	}
	if got := out(`jsonpath={range .items[*]}{.metadata.name}={.status.state} {end}`); got != "abc123=active def456=abandoned " {
		t.Errorf("-o jsonpath: %q", got)
	}
	if got := out("yaml"); !bytes.Contains([]byte(got), []byte("kind: SessionList")) {
		t.Errorf("-o yaml: %s", got)
	}
}
