package wire

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// Match is a developer's rule: a request matches when every condition it
// names holds. Comparable (==): the agent tells a developer's own rule
// again from another's by it.
type Match struct {
	// Header: one of the request's Header values equals Value, or, with
	// HeaderRegex, matches Value (an RE2 expression) as a whole; with
	// Baggage, the request's W3C baggage has the member Header with that
	// value.
	Header      string `json:"header,omitempty"`
	Value       string `json:"value,omitempty"`
	Baggage     bool   `json:"baggage,omitempty"`
	HeaderRegex bool   `json:"headerRegex,omitempty"`
	// Path: the request's path starts with Path, or, with PathRegex,
	// matches it (an RE2 expression) as a whole.
	Path      string `json:"path,omitempty"`
	PathRegex bool   `json:"pathRegex,omitempty"`
	// Method: the request's method, as sent (methods are case-sensitive).
	Method string `json:"method,omitempty"`
}

// maxRule bounds a rule's text: a rule comes from the network too.
const maxRule = 4096

// Extended says whether the rule needs an agent that knows Rules (mirrors
// came with them too).
func (m Match) Extended() bool { return m.HeaderRegex || m.Path != "" || m.Method != "" }

func (m Match) String() string {
	var parts []string
	switch {
	case m.Header == "":
	case m.Baggage && m.HeaderRegex:
		parts = append(parts, fmt.Sprintf("baggage member %s matching %s", m.Header, m.Value))
	case m.Baggage:
		parts = append(parts, fmt.Sprintf("baggage member %s=%s", m.Header, m.Value))
	case m.HeaderRegex:
		parts = append(parts, fmt.Sprintf("header %s matching %s", m.Header, m.Value))
	default:
		parts = append(parts, fmt.Sprintf("header %s: %s", m.Header, m.Value))
	}
	switch {
	case m.Path == "":
	case m.PathRegex:
		parts = append(parts, "path matching "+m.Path)
	default:
		parts = append(parts, "path "+m.Path+"*")
	}
	if m.Method != "" {
		parts = append(parts, "method "+m.Method)
	}
	return strings.Join(parts, ", ")
}

// RuleError says which condition of a rule is wrong: "header", "path",
// "method", or "" for the rule as a whole.
type RuleError struct {
	Cond string
	Err  error
}

func (e *RuleError) Error() string { return e.Err.Error() }

// Check refuses a rule no request can match, or that does not compile.
func (m Match) Check() error {
	bad := func(cond, format string, args ...any) error {
		return &RuleError{Cond: cond, Err: fmt.Errorf(format, args...)}
	}
	if m.Header == "" && m.Path == "" && m.Method == "" {
		return bad("", "a rule needs a header, a path or a method")
	}
	if len(m.Header)+len(m.Value)+len(m.Path)+len(m.Method) > maxRule {
		return bad("", "a rule of over %d bytes", maxRule)
	}
	if m.Header != "" {
		if !httpguts.ValidHeaderFieldName(m.Header) {
			return bad("header", "%q is not a valid header name", m.Header)
		}
		if m.Value == "" {
			return bad("header", "header %s: no value", m.Header)
		}
		if !m.HeaderRegex && !httpguts.ValidHeaderFieldValue(m.Value) {
			return bad("header", "the value of header %s holds characters a header cannot carry", m.Header)
		}
	} else if m.Value != "" || m.Baggage || m.HeaderRegex {
		return bad("header", "a header value without a header name")
	}
	if m.Path != "" && !m.PathRegex && !strings.HasPrefix(m.Path, "/") {
		return bad("path", "path %q does not start with /", m.Path)
	}
	if m.Path == "" && m.PathRegex {
		return bad("path", "a path expression without a path")
	}
	if m.Method != "" && !httpguts.ValidHeaderFieldName(m.Method) { // a token, as methods are
		return bad("method", "%q is not an HTTP method", m.Method)
	}
	if m.HeaderRegex {
		if _, err := regexp.Compile(m.Value); err != nil {
			return bad("header", "header %s: %q is not a regular expression (RE2): %v", m.Header, m.Value, err)
		}
	}
	if m.PathRegex {
		if _, err := regexp.Compile(m.Path); err != nil {
			return bad("path", "path: %q is not a regular expression (RE2): %v", m.Path, err)
		}
	}
	return nil
}

// Rule is a Match made ready to match requests.
type Rule struct {
	m           Match
	value, path *regexp.Regexp
}

// Compile compiles the rule's expressions, anchored: they match a whole
// value or path.
func (m Match) Compile() (*Rule, error) {
	r := &Rule{m: m}
	var err error
	if m.HeaderRegex {
		if r.value, err = regexp.Compile(`^(?:` + m.Value + `)$`); err != nil {
			return nil, fmt.Errorf("header %s: %q is not a regular expression (RE2): %v", m.Header, m.Value, err)
		}
	}
	if m.PathRegex {
		if r.path, err = regexp.Compile(`^(?:` + m.Path + `)$`); err != nil {
			return nil, fmt.Errorf("path: %q is not a regular expression (RE2): %v", m.Path, err)
		}
	}
	return r, nil
}

// Matches reports whether the request meets every condition of the rule.
func (r *Rule) Matches(req *http.Request) bool {
	m := r.m
	if m.Method != "" && req.Method != m.Method {
		return false
	}
	if m.Path != "" {
		p := req.URL.Path
		if r.path != nil && !r.path.MatchString(p) || r.path == nil && !strings.HasPrefix(p, m.Path) {
			return false
		}
	}
	if m.Header == "" {
		return true
	}
	value := func(v string) bool {
		if r.value != nil {
			return r.value.MatchString(v)
		}
		return v == m.Value
	}
	if !m.Baggage {
		for _, v := range req.Header.Values(m.Header) {
			if value(v) {
				return true
			}
		}
		return false
	}
	for _, line := range req.Header.Values("Baggage") {
		for _, member := range strings.Split(line, ",") {
			kv, _, _ := strings.Cut(member, ";") // drop properties
			k, v, ok := strings.Cut(kv, "=")
			if !ok || strings.TrimSpace(k) != m.Header {
				continue
			}
			if dv, err := url.PathUnescape(strings.TrimSpace(v)); err == nil && value(dv) {
				return true
			}
		}
	}
	return false
}

// Disjoint reports whether no request can match both rules, as far as
// their conditions prove it: different methods; header values that cannot
// be equal (a developer's value names the developer, so rules on two
// headers, or a header and a baggage member, with values that differ are
// taken as apart: a request carrying both developers' values is the
// caller's mistake); or paths that cannot begin alike. An expression
// counts by its literal prefix, which every match begins with. Two rules
// that could meet are not disjoint, and the agent refuses the second.
func Disjoint(a, b Match) bool {
	if a.Method != "" && b.Method != "" && a.Method != b.Method {
		return true
	}
	if a.Header != "" && b.Header != "" && apart(literal(a.Value, a.HeaderRegex), literal(b.Value, b.HeaderRegex)) {
		return true
	}
	if a.Path != "" && b.Path != "" {
		pa, pb := literal(a.Path, a.PathRegex), literal(b.Path, b.PathRegex)
		// A path prefix is a prefix too, not a whole path.
		pa.whole, pb.whole = pa.whole && a.PathRegex, pb.whole && b.PathRegex
		if apart(pa, pb) {
			return true
		}
	}
	return false
}

// text is what every value matching a condition begins with (whole: is).
type text struct {
	prefix string
	whole  bool
}

func literal(s string, regex bool) text {
	if !regex {
		return text{s, true}
	}
	re, err := regexp.Compile(s)
	if err != nil {
		return text{}
	}
	prefix, complete := re.LiteralPrefix()
	return text{prefix, complete}
}

// apart: no string is matched by both.
func apart(a, b text) bool {
	switch {
	case a.whole && b.whole:
		return a.prefix != b.prefix
	case a.whole:
		return !strings.HasPrefix(a.prefix, b.prefix)
	case b.whole:
		return !strings.HasPrefix(b.prefix, a.prefix)
	}
	return !strings.HasPrefix(a.prefix, b.prefix) && !strings.HasPrefix(b.prefix, a.prefix)
}

// Validate checks a Hello before it is sent or accepted.
func (h Hello) Validate() error {
	if h.Port == "" {
		return errors.New("no Service port")
	}
	if h.RecordAnswers && !h.Mirror {
		return errors.New("the cluster's answers come with a mirror's copies only")
	}
	if h.All {
		if h.Match != (Match{}) || h.Mirror {
			return errors.New("--all takes every connection: no rule and no mirror go with it")
		}
		return nil
	}
	// The laptop checks the rule too; the agent does not trust the network.
	if err := h.Match.Check(); err != nil {
		return fmt.Errorf("%s: %w", h.Match, err)
	}
	return nil
}
