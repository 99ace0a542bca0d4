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
// names holds.
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
	// And are more header conditions, each of which must hold too.
	And []HeaderCond `json:"and,omitempty"`
}

// HeaderCond is a header condition: one of the request's Header values
// equals Value (Regex: matches it as a whole), or, with Baggage, its W3C
// baggage has the member Header with that value.
type HeaderCond struct {
	Header  string `json:"header"`
	Value   string `json:"value"`
	Baggage bool   `json:"baggage,omitempty"`
	Regex   bool   `json:"regex,omitempty"`
}

func (c HeaderCond) String() string {
	switch {
	case c.Baggage && c.Regex:
		return fmt.Sprintf("baggage member %s matching %s", c.Header, c.Value)
	case c.Baggage:
		return fmt.Sprintf("baggage member %s=%s", c.Header, c.Value)
	case c.Regex:
		return fmt.Sprintf("header %s matching %s", c.Header, c.Value)
	}
	return fmt.Sprintf("header %s: %s", c.Header, c.Value)
}

// headers are the rule's header conditions, the first one's fields first.
func (m Match) headers() []HeaderCond {
	var out []HeaderCond
	if m.Header != "" {
		out = append(out, HeaderCond{Header: m.Header, Value: m.Value, Baggage: m.Baggage, Regex: m.HeaderRegex})
	}
	return append(out, m.And...)
}

// IsZero: the rule names no condition.
func (m Match) IsZero() bool { return m.Equal(Match{}) }

// Equal: the same conditions.
func (m Match) Equal(o Match) bool {
	if len(m.And) != len(o.And) {
		return false
	}
	for i := range m.And {
		if m.And[i] != o.And[i] {
			return false
		}
	}
	return m.Header == o.Header && m.Value == o.Value && m.Baggage == o.Baggage && m.HeaderRegex == o.HeaderRegex &&
		m.Path == o.Path && m.PathRegex == o.PathRegex && m.Method == o.Method
}

// maxRule bounds a rule's text: a rule comes from the network too.
const maxRule = 4096

// Extended says whether the rule needs an agent that knows Rules (mirrors
// came with them too).
func (m Match) Extended() bool {
	return m.HeaderRegex || m.Path != "" || m.Method != "" || len(m.And) > 0
}

func (m Match) String() string {
	var parts []string
	for _, c := range m.headers() {
		parts = append(parts, c.String())
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
	size := len(m.Header) + len(m.Value) + len(m.Path) + len(m.Method)
	for _, c := range m.And {
		size += len(c.Header) + len(c.Value)
	}
	if size > maxRule || len(m.And) > 16 {
		return bad("", "a rule of over %d bytes or 17 header conditions", maxRule)
	}
	if m.Header == "" && (m.Value != "" || m.Baggage || m.HeaderRegex || len(m.And) > 0) {
		return bad("header", "a header value without a header name")
	}
	for _, c := range m.headers() {
		if !httpguts.ValidHeaderFieldName(c.Header) {
			return bad("header", "%q is not a valid header name", c.Header)
		}
		if c.Value == "" {
			return bad("header", "header %s: no value", c.Header)
		}
		if !c.Regex && !httpguts.ValidHeaderFieldValue(c.Value) {
			return bad("header", "the value of header %s holds characters a header cannot carry", c.Header)
		}
		if c.Regex {
			if _, err := regexp.Compile(c.Value); err != nil {
				return bad("header", "header %s: %q is not a regular expression (RE2): %v", c.Header, c.Value, err)
			}
		}
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
	if m.PathRegex {
		if _, err := regexp.Compile(m.Path); err != nil {
			return bad("path", "path: %q is not a regular expression (RE2): %v", m.Path, err)
		}
	}
	return nil
}

// Rule is a Match made ready to match requests.
type Rule struct {
	m       Match
	path    *regexp.Regexp
	headers []condMatcher
}

type condMatcher struct {
	c  HeaderCond
	re *regexp.Regexp
}

// Compile compiles the rule's expressions, anchored: they match a whole
// value or path.
func (m Match) Compile() (*Rule, error) {
	r := &Rule{m: m}
	for _, c := range m.headers() {
		cm := condMatcher{c: c}
		if c.Regex {
			re, err := regexp.Compile(`^(?:` + c.Value + `)$`)
			if err != nil {
				return nil, fmt.Errorf("header %s: %q is not a regular expression (RE2): %v", c.Header, c.Value, err)
			}
			cm.re = re
		}
		r.headers = append(r.headers, cm)
	}
	if m.PathRegex {
		var err error
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
	for _, h := range r.headers {
		if !h.matches(req) {
			return false
		}
	}
	return true
}

func (h condMatcher) matches(req *http.Request) bool {
	value := func(v string) bool {
		if h.re != nil {
			return h.re.MatchString(v)
		}
		return v == h.c.Value
	}
	if !h.c.Baggage {
		for _, v := range req.Header.Values(h.c.Header) {
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
			if !ok || strings.TrimSpace(k) != h.c.Header {
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
// their conditions prove it: different methods; values of one key that
// cannot be equal (a key is a header or a baggage member's name, without
// an "x-" and its case: x-cz-intercept and the baggage member cz-intercept
// are one key, a developer's value naming the developer whichever way it
// travels); or paths that cannot begin alike. An expression counts by its
// literal prefix, which every match begins with. Two rules that could meet
// are not disjoint, and the agent refuses the second.
func Disjoint(a, b Match) bool {
	if a.Method != "" && b.Method != "" && a.Method != b.Method {
		return true
	}
	for _, ca := range a.headers() {
		for _, cb := range b.headers() {
			if key(ca.Header) == key(cb.Header) && apart(literal(ca.Value, ca.Regex), literal(cb.Value, cb.Regex)) {
				return true
			}
		}
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

// key is a header's or baggage member's name as Disjoint compares them.
func key(name string) string {
	k := strings.ToLower(name)
	return strings.TrimPrefix(k, "x-")
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
		if !h.Match.IsZero() || h.Mirror {
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
