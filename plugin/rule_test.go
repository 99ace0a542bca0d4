package plugin

import (
	"strings"
	"testing"

	"github.com/kubectl-cz/kubectl-cz/agent/wire"
)

// Repeated header flags are conditions that must all hold; mistakes are
// refused before anything changes.
func TestRuleFlags(t *testing.T) {
	r := ruleFlags{header: []string{"x-team=red", "baggage:dev=alice"}, headerRegex: []string{"x-tenant=test-[0-9]+"}, path: "/orders", method: "POST"}
	m, err := r.match()
	if err != nil {
		t.Fatal(err)
	}
	want := wire.Match{Header: "x-team", Value: "red", Path: "/orders", Method: "POST",
		And: []wire.HeaderCond{{Header: "dev", Value: "alice", Baggage: true}, {Header: "x-tenant", Value: "test-[0-9]+", Regex: true}}}
	if !m.Equal(want) {
		t.Errorf("rule %+v, want %+v", m, want)
	}
	if got := m.String(); got != "header x-team: red, baggage member dev=alice, header x-tenant matching test-[0-9]+, path /orders*, method POST" {
		t.Errorf("String: %s", got)
	}
	for _, bad := range []ruleFlags{
		{header: []string{"x y=1"}},
		{headerRegex: []string{"x=("}},
		{path: "/a", pathRegex: "/b"},
		{all: true, mirror: true},
		{all: true, path: "/"},
		{method: "GE T"},
	} {
		if _, err := bad.match(); err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("%+v: %v", bad, err)
		}
	}
	if m, err := (&ruleFlags{}).match(); err != nil || !m.IsZero() {
		t.Errorf("no condition: %+v %v", m, err)
	}
}
