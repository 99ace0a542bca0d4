package wire

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func request(method, target string, header ...string) *http.Request {
	r := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Add(header[i], header[i+1])
	}
	return r
}

// A request matches a rule when every condition holds: header (exact or a
// whole-value expression), baggage member, path prefix or expression,
// method.
func TestRuleMatches(t *testing.T) {
	for _, c := range []struct {
		m    Match
		req  *http.Request
		want bool
	}{
		{Match{Header: "x-dev", Value: "alice"}, request("GET", "/", "X-Dev", "alice"), true},
		{Match{Header: "x-dev", Value: "alice"}, request("GET", "/", "X-Dev", "alicex"), false},
		{Match{Header: "x-dev", Value: "ali.*", HeaderRegex: true}, request("GET", "/", "X-Dev", "alice"), true},
		{Match{Header: "x-dev", Value: "ali", HeaderRegex: true}, request("GET", "/", "X-Dev", "alice"), false}, // whole value
		{Match{Header: "dev", Value: "bob", Baggage: true}, request("GET", "/", "Baggage", "a=1, dev=bob;p=1"), true},
		{Match{Path: "/api"}, request("GET", "/api/v1/x"), true},
		{Match{Path: "/api"}, request("GET", "/ap"), false},
		{Match{Path: "/api/v[0-9]+/x", PathRegex: true}, request("GET", "/api/v12/x"), true},
		{Match{Path: "/api/v[0-9]+", PathRegex: true}, request("GET", "/api/v12/x"), false}, // whole path
		{Match{Method: "POST"}, request("GET", "/"), false},
		{Match{Method: "POST", Path: "/orders", Header: "x-dev", Value: "alice"}, request("POST", "/orders/1", "X-Dev", "alice"), true},
		{Match{Method: "POST", Path: "/orders", Header: "x-dev", Value: "alice"}, request("POST", "/users", "X-Dev", "alice"), false},
	} {
		r, err := c.m.Compile()
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Matches(c.req); got != c.want {
			t.Errorf("%s on %s %s %v: %v, want %v", c.m, c.req.Method, c.req.URL, c.req.Header, got, c.want)
		}
	}
}

// Two rules are disjoint only where their plain conditions prove it; any
// rule that could meet another is not.
func TestDisjoint(t *testing.T) {
	alice, bob := Match{Header: "x-dev", Value: "alice"}, Match{Header: "X-Dev", Value: "bob"}
	for _, c := range []struct {
		a, b Match
		want bool
	}{
		{alice, bob, true},
		{alice, alice, false},
		{alice, Match{Path: "/api"}, false}, // alice's request to /api matches both
		{Match{Path: "/ping"}, Match{Path: "/healthz", Header: "x-dev", Value: "bob"}, true},
		{Match{Path: "/p"}, Match{Path: "/ping"}, false},
		{Match{Path: "/ping", PathRegex: true}, Match{Path: "/healthz"}, true}, // every match begins with /ping
		{Match{Path: "/p.*", PathRegex: true}, Match{Path: "/ping"}, false},
		{Match{Path: "/orders/[0-9]+", PathRegex: true}, Match{Path: "/ping"}, true},
		{Match{Path: ".*/x", PathRegex: true}, Match{Path: "/ping"}, false}, // no literal prefix: may meet anything
		{Match{Method: "GET"}, Match{Method: "POST"}, true},
		{Match{Header: "x-dev", Value: "a.*", HeaderRegex: true}, bob, true},                      // bob's value does not begin with a
		{Match{Header: "x-dev", Value: "b.*", HeaderRegex: true}, bob, false},                     // it does
		{Match{Header: "dev", Value: "a", Baggage: true}, Match{Header: "dev", Value: "b"}, true}, // values name developers
	} {
		if got := Disjoint(c.a, c.b); got != c.want || Disjoint(c.b, c.a) != c.want {
			t.Errorf("Disjoint(%s; %s) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}

// Rules that cannot match or do not compile are refused, with --all too.
func TestRuleCheck(t *testing.T) {
	for _, m := range []Match{
		{},
		{Path: "api"},
		{Path: "(", PathRegex: true},
		{Header: "x-dev", Value: "(", HeaderRegex: true},
		{Method: "GE T"},
		{Value: "x"},
	} {
		if err := m.Check(); err == nil {
			t.Errorf("%+v accepted", m)
		}
	}
	if err := (Hello{Port: "http", All: true, Match: Match{Path: "/"}}).Validate(); err == nil {
		t.Error("--all with a rule accepted")
	}
	for _, m := range []Match{{Path: "/"}, {Method: "DELETE"}, {Header: "x", Value: "[a-z]+", HeaderRegex: true}} {
		if err := m.Check(); err != nil {
			t.Errorf("%s: %v", m, err)
		}
	}
}

// Several header conditions must all hold; two rules are apart when any
// key of theirs takes values that cannot be equal, and a rule on another
// key alone is not apart.
func TestSeveralHeaderConditions(t *testing.T) {
	m := Match{Header: "x-team", Value: "red", And: []HeaderCond{{Header: "x-dev", Value: "ali.*", Regex: true}}}
	r, err := m.Compile()
	if err != nil || m.Check() != nil {
		t.Fatal(err, m.Check())
	}
	if !r.Matches(request("GET", "/", "X-Team", "red", "X-Dev", "alice")) || r.Matches(request("GET", "/", "X-Team", "red")) || r.Matches(request("GET", "/", "X-Dev", "alice")) {
		t.Error("a condition was skipped")
	}
	if !Disjoint(m, Match{Header: "x-dev", Value: "bob"}) {
		t.Error("x-dev alice.* and bob cannot meet")
	}
	if Disjoint(m, Match{Header: "x-other", Value: "bob"}) {
		t.Error("a rule on another header alone can meet this one")
	}
	if !m.Equal(Match{Header: "x-team", Value: "red", And: []HeaderCond{{Header: "x-dev", Value: "ali.*", Regex: true}}}) || m.Equal(Match{Header: "x-team", Value: "red"}) {
		t.Error("Equal")
	}
	if err := (Match{Header: "x", Value: "1", And: []HeaderCond{{Header: "y z", Value: "1"}}}).Check(); err == nil {
		t.Error("a bad second header accepted")
	}
}
