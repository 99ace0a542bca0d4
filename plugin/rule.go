package plugin

import (
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

// match turns the flags into a rule (environment.Rule, as a file's), so a
// rule no request can match is refused before anything changes. No
// condition at all is the zero Match: the default header, added later.
func (r *ruleFlags) match() (wire.Match, error) {
	m, field, err := environment.Rule{Headers: r.header, HeaderRegexes: r.headerRegex, Path: r.path, PathRegex: r.pathRegex,
		Method: r.method, All: r.all, Mirror: r.mirror}.Match()
	if err != nil && field != "" {
		return m, fmt.Errorf("%s: %w", flagOf[field], err)
	}
	return m, err
}

// flagOf names the flag of a rule's field.
var flagOf = map[string]string{"header": "--header", "headerRegex": "--header-regex", "path": "--path", "pathRegex": "--path-regex",
	"method": "--method", "all": "--all", "mirror": "--mirror"}
