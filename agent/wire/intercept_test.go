package wire

import (
	"strings"
	"testing"
)

// A Hello from the network with a rule no request can match (a name with a
// space, a value with a newline, huge) is refused by the agent itself.
func TestHelloValidateRefusesBadRules(t *testing.T) {
	good := Hello{Developer: "alice", Port: "http", Match: Match{Header: "x-cz-intercept", Value: "alice"}}
	if err := good.Validate(); err != nil {
		t.Fatalf("a good rule: %v", err)
	}
	for _, m := range []Match{
		{Header: "x y", Value: "1"},
		{Header: "x-dev", Value: "a\r\nInjected: 1"},
		{Header: "x-dev", Value: strings.Repeat("a", 5000)},
		{Header: "", Value: "1"},
		{Header: "baggage member", Value: "1", Baggage: true},
	} {
		h := good
		h.Match = m
		if err := h.Validate(); err == nil {
			t.Errorf("%+v accepted", m)
		}
	}
	all := Hello{Developer: "alice", Port: "http", All: true}
	if err := all.Validate(); err != nil {
		t.Errorf("--all: %v", err)
	}
}
