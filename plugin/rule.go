package plugin

import (
	"errors"
	"fmt"

	"github.com/spf13/pflag"

	"github.com/kubectl-cz/kubectl-cz/agent/wire"
	"github.com/kubectl-cz/kubectl-cz/environment"
)

// ruleFlags say which requests of an intercepted Service a developer
// takes: every condition given must hold (intercept, run --intercept).
type ruleFlags struct {
	header, headerRegex     []string
	path, pathRegex, method string
	all, mirror             bool
}

// add puts the flags on f; note prefixes their help (run's "With --intercept: ").
func (r *ruleFlags) add(f *pflag.FlagSet, note string) {
	f.StringArrayVar(&r.header, "header", nil, note+"Take requests whose header K has value V (K=V), or whose W3C baggage has member K=V (baggage:K=V); repeatable: all must hold; default, when no other condition is given: x-cz-intercept=<your user>")
	f.StringArrayVar(&r.headerRegex, "header-regex", nil, note+"Take requests with a header K whose value matches the regular expression RE as a whole (K=RE, or baggage:K=RE); repeatable")
	f.StringVar(&r.path, "path", "", note+"Take requests whose path starts with PREFIX")
	f.StringVar(&r.pathRegex, "path-regex", "", note+"Take requests whose path matches the regular expression RE as a whole")
	f.StringVar(&r.method, "method", "", note+"Take requests with this method (GET, POST, ...)")
	f.BoolVar(&r.all, "all", false, note+"Take every connection of the port (plain TCP, any protocol): no other condition goes with it")
	f.BoolVar(&r.mirror, "mirror", false, note+"Take nothing: the cluster keeps answering the requests the rule matches, and a copy of each reaches the local port (its answer is dropped; HTTP/1.1)")
}

// given says whether any condition was given.
func (r *ruleFlags) given() bool {
	return r.all || len(r.header) > 0 || len(r.headerRegex) > 0 || r.path != "" || r.pathRegex != "" || r.method != ""
}

// match turns the flags into a rule, checked as the agent will check it,
// so a rule no request can match is refused before anything changes. No
// condition at all is the zero Match: the default header, added later.
func (r *ruleFlags) match() (wire.Match, error) {
	var m wire.Match
	if r.all && r.mirror {
		return m, errors.New("--all takes every connection as plain TCP: there is nothing to mirror; give --mirror a rule (or none: the default header)")
	}
	if r.all {
		if len(r.header) > 0 || len(r.headerRegex) > 0 || r.path != "" || r.pathRegex != "" || r.method != "" {
			return m, errors.New("--all takes every connection: it cannot be combined with --header, --path or --method")
		}
		return m, nil
	}
	if r.path != "" && r.pathRegex != "" {
		return m, errors.New("give one of --path and --path-regex")
	}
	var conds []wire.HeaderCond
	for _, h := range []struct {
		flag   string
		values []string
		regex  bool
	}{{"--header", r.header, false}, {"--header-regex", r.headerRegex, true}} {
		for _, v := range h.values {
			parsed, err := environment.ParseHeader(v)
			if err != nil {
				return m, fmt.Errorf("%s: %v", h.flag, err)
			}
			conds = append(conds, wire.HeaderCond{Header: parsed.Name, Value: parsed.Value, Baggage: parsed.Baggage, Regex: h.regex})
		}
	}
	if len(conds) > 0 {
		c := conds[0]
		m.Header, m.Value, m.Baggage, m.HeaderRegex = c.Header, c.Value, c.Baggage, c.Regex
		m.And = conds[1:]
		if len(m.And) == 0 {
			m.And = nil
		}
	}
	m.Path, m.PathRegex = r.path, false
	if r.pathRegex != "" {
		m.Path, m.PathRegex = r.pathRegex, true
	}
	m.Method = r.method
	if m.IsZero() {
		return m, nil
	}
	if err := m.Check(); err != nil {
		return m, err
	}
	return m, nil
}
