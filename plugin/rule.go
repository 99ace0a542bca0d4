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
	header, headerRegex, path, pathRegex, method string
	all, mirror                                  bool
}

// add puts the flags on f; note prefixes their help (run's "With --intercept: ").
func (r *ruleFlags) add(f *pflag.FlagSet, note string) {
	f.StringVar(&r.header, "header", "", note+"Take requests whose header K has value V (K=V), or whose W3C baggage has member K=V (baggage:K=V); default, when no other condition is given: x-cz-intercept=<your user>")
	f.StringVar(&r.headerRegex, "header-regex", "", note+"Take requests with a header K whose value matches the regular expression RE as a whole (K=RE, or baggage:K=RE)")
	f.StringVar(&r.path, "path", "", note+"Take requests whose path starts with PREFIX")
	f.StringVar(&r.pathRegex, "path-regex", "", note+"Take requests whose path matches the regular expression RE as a whole")
	f.StringVar(&r.method, "method", "", note+"Take requests with this method (GET, POST, ...)")
	f.BoolVar(&r.all, "all", false, note+"Take every connection of the port (plain TCP, any protocol): no other condition goes with it")
	f.BoolVar(&r.mirror, "mirror", false, note+"Take nothing: the cluster keeps answering the requests the rule matches, and a copy of each reaches the local port (its answer is dropped; HTTP/1.1)")
}

// given says whether any condition was given.
func (r *ruleFlags) given() bool {
	return r.all || r.header != "" || r.headerRegex != "" || r.path != "" || r.pathRegex != "" || r.method != ""
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
		if r.header != "" || r.headerRegex != "" || r.path != "" || r.pathRegex != "" || r.method != "" {
			return m, errors.New("--all takes every connection: it cannot be combined with --header, --path or --method")
		}
		return m, nil
	}
	if r.header != "" && r.headerRegex != "" {
		return m, errors.New("give one of --header and --header-regex")
	}
	if r.path != "" && r.pathRegex != "" {
		return m, errors.New("give one of --path and --path-regex")
	}
	for _, h := range []struct {
		flag, value string
		regex       bool
	}{{"--header", r.header, false}, {"--header-regex", r.headerRegex, true}} {
		if h.value == "" {
			continue
		}
		parsed, err := environment.ParseHeader(h.value)
		if err != nil {
			return m, fmt.Errorf("%s: %v", h.flag, err)
		}
		m.Header, m.Value, m.Baggage, m.HeaderRegex = parsed.Name, parsed.Value, parsed.Baggage, h.regex
	}
	m.Path, m.PathRegex = r.path, false
	if r.pathRegex != "" {
		m.Path, m.PathRegex = r.pathRegex, true
	}
	m.Method = r.method
	if m == (wire.Match{}) {
		return m, nil
	}
	if err := m.Check(); err != nil {
		return m, err
	}
	return m, nil
}
