// Package environment reads an environment file (cz.yaml): the parts of a
// developer's Logical Ephemeral Environment, declared once and shared by a
// team. Reading is strict: an unknown field, a value of the wrong type or
// a bad value is refused with the file, line and field, before anything
// changes. Values may use the environment as ${VAR} or ${VAR:-default}
// ($$ is a dollar sign), so one file serves a team.
package environment

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
	"golang.org/x/net/http/httpguts"

	"github.com/kubectl-cz/kubectl-cz/agent/wire"
	"github.com/kubectl-cz/kubectl-cz/containerenv"
	"github.com/kubectl-cz/kubectl-cz/workload"
)

// APIVersion and Kind head every environment file.
const (
	APIVersion = "kubectl-cz.dev/v1alpha1"
	Kind       = "Environment"
)

// DNS modes a teleport may use.
var DNSModes = []string{"auto", "resolvconf", "hosts", "none"}

// File is an environment file.
type File struct {
	APIVersion string   `yaml:"apiVersion"`
	Kind       string   `yaml:"kind"`
	Metadata   Metadata `yaml:"metadata"`
	Spec       Spec     `yaml:"spec"`

	// Dir is the folder of the file: relative paths in it are relative to it.
	Dir string `yaml:"-"`
}

// Metadata names the environment.
type Metadata struct {
	Name string `yaml:"name"`
}

// Spec is the environment's parts. They start in this order (teleport,
// env files, mounts, intercepts, local processes) and stop in reverse.
type Spec struct {
	// Namespace is where the parts' names are (default: -n, else the
	// kubeconfig context's).
	Namespace  string      `yaml:"namespace"`
	Teleport   *Teleport   `yaml:"teleport"`
	Env        []EnvExport `yaml:"env"`
	Mounts     []Mount     `yaml:"mounts"`
	Intercepts []Intercept `yaml:"intercepts"`
	Run        []Run       `yaml:"run"`
}

// Teleport makes the Services of namespaces answer on this machine.
type Teleport struct {
	Namespaces []string `yaml:"namespaces"` // default: the spec's namespace
	Exclude    []string `yaml:"exclude"`
	DNS        string   `yaml:"dns"`
	// ClusterDomain is the cluster's DNS domain (default: read from the cluster).
	ClusterDomain string `yaml:"clusterDomain"`
}

// EnvExport writes a workload's environment to a file.
type EnvExport struct {
	Workload  string `yaml:"workload"`
	Container string `yaml:"container"`
	File      string `yaml:"file"`
	Format    string `yaml:"format"`
}

// Mount shows a workload's volumes in a local folder.
type Mount struct {
	Workload  string `yaml:"workload"`
	Container string `yaml:"container"`
	Dir       string `yaml:"dir"`
	ReadOnly  bool   `yaml:"readOnly"`
	// Compress asks for big files' reads zstd-compressed (mount --compress).
	Compress bool `yaml:"compress"`
}

// Intercept sends a Service's requests (those with a header, or all) to a
// local port.
type Intercept struct {
	Service   string `yaml:"service"`
	Port      string `yaml:"port"`
	LocalPort int    `yaml:"localPort"`
	// The rule: a request is taken when every condition given holds.
	// Header is K=V, or baggage:K=V for a W3C baggage member; HeaderRegex
	// the same with a regular expression for the value; Path a prefix,
	// PathRegex an expression for the whole path; Method a method.
	Header      string `yaml:"header"`
	HeaderRegex string `yaml:"headerRegex"`
	Path        string `yaml:"path"`
	PathRegex   string `yaml:"pathRegex"`
	Method      string `yaml:"method"`
	All         bool   `yaml:"all"`
	// Mirror: the cluster keeps answering; a copy reaches localPort.
	Mirror bool `yaml:"mirror"`
}

// Match is the intercept's rule, checked as the agent checks it; the zero
// Match when none is given (the default header) or with all.
func (ic Intercept) Match() (wire.Match, error) {
	m, _, err := ic.rule().Match()
	return m, err
}

func (ic Intercept) rule() Rule {
	r := Rule{Path: ic.Path, PathRegex: ic.PathRegex, Method: ic.Method, All: ic.All, Mirror: ic.Mirror}
	if ic.Header != "" {
		r.Headers = []string{ic.Header}
	}
	if ic.HeaderRegex != "" {
		r.HeaderRegexes = []string{ic.HeaderRegex}
	}
	return r
}

// Rule is an intercept's rule as written, in a file or on the command
// line: headers as K=V (or baggage:K=V), every one of which must hold.
type Rule struct {
	Headers, HeaderRegexes  []string
	Path, PathRegex, Method string
	All, Mirror             bool
}

// Match builds the rule and checks it as the agent will, so a rule no
// request can match is refused before anything changes; an error comes
// with the field it is about (header, headerRegex, path, pathRegex,
// method, all, mirror). No condition at all is the zero Match.
func (r Rule) Match() (wire.Match, string, error) {
	var m wire.Match
	if r.All && r.Mirror {
		return m, "mirror", errors.New("all takes every connection as plain TCP: there is nothing to mirror")
	}
	if r.All {
		if len(r.Headers) > 0 || len(r.HeaderRegexes) > 0 || r.Path != "" || r.PathRegex != "" || r.Method != "" {
			return m, "all", errors.New("all takes every connection: it cannot be combined with a header, a path or a method")
		}
		return m, "", nil
	}
	if r.Path != "" && r.PathRegex != "" {
		return m, "pathRegex", errors.New("give one of path and pathRegex")
	}
	var conds []wire.HeaderCond
	for _, h := range []struct {
		field  string
		values []string
		regex  bool
	}{{"header", r.Headers, false}, {"headerRegex", r.HeaderRegexes, true}} {
		for _, v := range h.values {
			parsed, err := ParseHeader(v)
			if err != nil {
				return m, h.field, err
			}
			conds = append(conds, wire.HeaderCond{Header: parsed.Name, Value: parsed.Value, Baggage: parsed.Baggage, Regex: h.regex})
		}
	}
	if len(conds) > 0 {
		c := conds[0]
		m.Header, m.Value, m.Baggage, m.HeaderRegex = c.Header, c.Value, c.Baggage, c.Regex
		if len(conds) > 1 {
			m.And = conds[1:]
		}
	}
	m.Path = r.Path
	if r.PathRegex != "" {
		m.Path, m.PathRegex = r.PathRegex, true
	}
	m.Method = r.Method
	if m.IsZero() {
		return m, "", nil
	}
	err := m.Check()
	var re *wire.RuleError
	if !errors.As(err, &re) {
		return m, "", err
	}
	field := re.Cond
	switch {
	case field == "header" && m.HeaderRegex:
		field = "headerRegex"
	case field == "path" && m.PathRegex:
		field = "pathRegex"
	}
	return m, field, err
}

// Run is a local process.
type Run struct {
	Name      string            `yaml:"name"`
	Command   []string          `yaml:"command"`
	Dir       string            `yaml:"dir"`
	EnvFrom   string            `yaml:"envFrom"`
	Container string            `yaml:"container"`
	Env       map[string]string `yaml:"env"`
	Ready     string            `yaml:"ready"`
}

// Read reads and checks an environment file; lookup gives the values of
// ${VAR} (os.LookupEnv when nil).
func Read(path string, lookup func(string) (string, bool)) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read environment file: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	f, err := Parse(path, data, lookup)
	if err != nil {
		return nil, err
	}
	f.Dir = filepath.Dir(abs)
	return f, nil
}

// Parse checks an environment file's content; name is what errors call it.
func Parse(name string, data []byte, lookup func(string) (string, bool)) (*File, error) {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	// Unknown fields and wrong types, with yaml's line numbers.
	var strict File
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&strict); err != nil && !onlyVariables(err) {
		return nil, yamlError(name, err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, yamlError(name, err)
	}
	lines := map[string]int{}
	var expandErr error
	walk(&doc, "", func(path string, n *yaml.Node) {
		lines[path] = n.Line
		if n.Kind == yaml.ScalarNode && expandErr == nil && strings.Contains(n.Value, "$") {
			v, err := expand(n.Value, lookup)
			if err != nil {
				expandErr = fmt.Errorf("%s:%d: %s: %v", name, n.Line, path, err)
			}
			n.Value = v
			if n.Style == 0 {
				// Unquoted: the value's own type, as if written there
				// (localPort: ${PORT} is a number once PORT is 3000).
				n.Tag = ""
			}
		}
	})
	if expandErr != nil {
		return nil, expandErr
	}
	var f File
	if err := doc.Decode(&f); err != nil {
		return nil, yamlError(name, err)
	}
	if err := f.check(); err != nil {
		var fe *fieldError
		if errors.As(err, &fe) {
			line := lines[fe.path]
			for p := fe.path; line == 0 && p != ""; p = parent(p) {
				line = lines[p]
			}
			return nil, fmt.Errorf("%s:%d: %s: %s", name, line, fe.path, fe.msg)
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &f, nil
}

// onlyVariables: the strict decode's only complaints are unquoted variable
// references where a number or a boolean goes, which are decoded (with
// their line) once expanded.
func onlyVariables(err error) bool {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return false
	}
	for _, msg := range te.Errors {
		_, value, ok := strings.Cut(msg, "cannot unmarshal !!str `")
		if !ok || !strings.Contains(value, "${") {
			return false
		}
	}
	return true
}

// walk visits every node of a document with its path (spec.run[0].name).
func walk(n *yaml.Node, path string, visit func(string, *yaml.Node)) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			walk(c, path, visit)
		}
		return
	case yaml.MappingNode:
		visit(path, n)
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			if path != "" {
				key = path + "." + key
			}
			walk(n.Content[i+1], key, visit)
		}
	case yaml.SequenceNode:
		visit(path, n)
		for i, c := range n.Content {
			walk(c, fmt.Sprintf("%s[%d]", path, i), visit)
		}
	default:
		visit(path, n)
	}
}

func parent(path string) string {
	i := strings.LastIndexAny(path, ".[")
	if i < 0 {
		return ""
	}
	return path[:i]
}

var varRef = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}|\$\{[^}]*\}?`)

// expand replaces ${VAR} and ${VAR:-default}; $$ is a dollar sign; any other
// ${...} is an error. A lone $ stays as it is (shell text in a command).
func expand(s string, lookup func(string) (string, bool)) (string, error) {
	var err error
	out := varRef.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		sub := varRef.FindStringSubmatch(m)
		if sub[1] == "" {
			if err == nil {
				err = fmt.Errorf("%q is not a variable reference: want ${NAME} or ${NAME:-default} ($$ for a dollar sign)", m)
			}
			return m
		}
		if v, ok := lookup(sub[1]); ok && (v != "" || sub[2] == "") {
			return v
		}
		if sub[2] != "" {
			return sub[3]
		}
		if err == nil {
			err = fmt.Errorf("${%s} is not set (give a default with ${%s:-value})", sub[1], sub[1])
		}
		return m
	})
	return out, err
}

var (
	yamlLine    = regexp.MustCompile(`^line (\d+): (.*)$`)
	notFound    = regexp.MustCompile(`^field (\S+) not found in type \S+$`)
	yamlGeneric = regexp.MustCompile(`^yaml: (line (\d+): )?(.*)$`)
)

// yamlError turns yaml's errors into file:line: message, the first of them
// (and how many more).
func yamlError(name string, err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg := te.Errors[0]
		if m := yamlLine.FindStringSubmatch(msg); m != nil {
			text := m[2]
			if nf := notFound.FindStringSubmatch(text); nf != nil {
				text = fmt.Sprintf("unknown field %q", nf[1])
			}
			msg = fmt.Sprintf("%s:%s: %s", name, m[1], text)
		} else {
			msg = name + ": " + msg
		}
		if more := len(te.Errors) - 1; more > 0 {
			msg += fmt.Sprintf(" (and %d more)", more)
		}
		return errors.New(msg)
	}
	if m := yamlGeneric.FindStringSubmatch(err.Error()); m != nil && m[2] != "" {
		return fmt.Errorf("%s:%s: %s", name, m[2], m[3])
	}
	if err.Error() == "EOF" {
		return fmt.Errorf("%s: the file is empty", name)
	}
	return fmt.Errorf("%s: %v", name, err)
}

// fieldError is a bad value at a path.
type fieldError struct{ path, msg string }

func (e *fieldError) Error() string { return e.path + ": " + e.msg }

func bad(path, format string, args ...any) error {
	return &fieldError{path: path, msg: fmt.Sprintf(format, args...)}
}

func (f *File) check() error {
	if f.APIVersion != APIVersion {
		return bad("apiVersion", "want %s, not %q", APIVersion, f.APIVersion)
	}
	if f.Kind != Kind {
		return bad("kind", "want %s, not %q", Kind, f.Kind)
	}
	s := &f.Spec
	if s.Teleport == nil && len(s.Env)+len(s.Mounts)+len(s.Intercepts)+len(s.Run) == 0 {
		return bad("spec", "names no part: want teleport, env, mounts, intercepts or run")
	}
	if t := s.Teleport; t != nil {
		if t.DNS == "" {
			t.DNS = "auto"
		}
		if !oneOf(t.DNS, DNSModes) {
			return bad("spec.teleport.dns", "want one of %s, not %q", strings.Join(DNSModes, ", "), t.DNS)
		}
	}
	for i := range s.Env {
		e := &s.Env[i]
		p := fmt.Sprintf("spec.env[%d]", i)
		if err := checkWorkload(p+".workload", e.Workload); err != nil {
			return err
		}
		if e.File == "" {
			return bad(p+".file", "is required: where to write the environment")
		}
		if e.Format == "" {
			e.Format = "env"
		}
		if !containerenv.ValidFormat(e.Format) {
			return bad(p+".format", "want one of %s, not %q", strings.Join(containerenv.Formats, ", "), e.Format)
		}
	}
	for i, m := range s.Mounts {
		p := fmt.Sprintf("spec.mounts[%d]", i)
		if err := checkWorkload(p+".workload", m.Workload); err != nil {
			return err
		}
		if m.Dir == "" {
			return bad(p+".dir", "is required: the local folder to mount at")
		}
	}
	ports := map[int]string{}
	for i, ic := range s.Intercepts {
		p := fmt.Sprintf("spec.intercepts[%d]", i)
		if ic.Service == "" {
			return bad(p+".service", "is required")
		}
		if ic.LocalPort < 1 || ic.LocalPort > 65535 {
			return bad(p+".localPort", "want a port number (1-65535), not %d", ic.LocalPort)
		}
		if other, dup := ports[ic.LocalPort]; dup {
			return bad(p+".localPort", "%d is also the local port of %s", ic.LocalPort, other)
		}
		ports[ic.LocalPort] = p
		if _, field, err := ic.rule().Match(); err != nil {
			if field != "" {
				p += "." + field
			}
			return bad(p, "%v", err)
		}
	}
	names := map[string]bool{}
	for i, r := range s.Run {
		p := fmt.Sprintf("spec.run[%d]", i)
		if r.Name == "" {
			return bad(p+".name", "is required")
		}
		if names[r.Name] {
			return bad(p+".name", "%q names another run too", r.Name)
		}
		names[r.Name] = true
		if len(r.Command) == 0 || r.Command[0] == "" {
			return bad(p+".command", "is required: the program and its arguments, as a list")
		}
		if r.EnvFrom != "" {
			if err := checkWorkload(p+".envFrom", r.EnvFrom); err != nil {
				return err
			}
		}
		if r.Ready != "" {
			if _, port, err := net.SplitHostPort(r.Ready); err != nil || !validPort(port) {
				return bad(p+".ready", "want HOST:PORT, the address the process listens on once ready, not %q", r.Ready)
			}
		}
		for k := range r.Env {
			if k == "" || strings.ContainsAny(k, "=\x00") {
				return bad(p+".env", "%q is not a variable name", k)
			}
		}
	}
	return nil
}

func checkWorkload(path, s string) error {
	if _, err := workload.Parse(s); err != nil {
		return bad(path, "%v", err)
	}
	return nil
}

func validPort(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n > 0 && n < 65536
}

func oneOf(s string, set []string) bool {
	for _, v := range set {
		if s == v {
			return true
		}
	}
	return false
}

// Header is a parsed header rule.
type Header struct {
	Name, Value string
	Baggage     bool
}

// ParseHeader reads K=V or baggage:K=V, refusing names HTTP cannot carry.
func ParseHeader(s string) (Header, error) {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" || v == "" {
		return Header{}, fmt.Errorf("want K=V or baggage:K=V, not %q", s)
	}
	h := Header{Name: k, Value: v}
	if member, isBaggage := strings.CutPrefix(k, "baggage:"); isBaggage {
		h = Header{Name: member, Value: v, Baggage: true}
	}
	if h.Name == "" || !httpguts.ValidHeaderFieldName(h.Name) {
		return Header{}, fmt.Errorf("%q is not a valid header name", h.Name)
	}
	if !httpguts.ValidHeaderFieldValue(h.Value) {
		return Header{}, fmt.Errorf("the value of header %s holds characters a header cannot carry", h.Name)
	}
	return h, nil
}

// Path makes a path of the file absolute, relative to the file's folder.
func (f *File) Path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(f.Dir, p)
}
