package containerenv

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"
	"unicode"

	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"
)

// Formats are the ways an environment can be written.
var Formats = []string{"sh", "env", "docker", "json", "yaml"}

var (
	shellName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	plain     = regexp.MustCompile(`^[A-Za-z0-9_./:@,+=%^-]*$`)
)

// Write writes vars in format:
//
//	sh      export NAME='value' lines, for `eval` or `source`
//	env     NAME=value lines, quoted where needed (a .env file for docker
//	        compose, dotenv libraries and IDEs)
//	docker  NAME=value lines, unquoted (docker run --env-file); values with a
//	        line break cannot be written
//	json    {"NAME": "value", ...}
//	yaml    NAME: value
//
// It returns the names it had to leave out (sh and env: names a shell
// cannot export; env: values no quoting keeps both safe to source and
// exact for dotenv parsers; docker: names its parser would misread).
func Write(w io.Writer, vars []Var, format string) (skipped []string, err error) {
	var b strings.Builder
	switch format {
	case "sh":
		for _, v := range vars {
			if !shellName.MatchString(v.Name) {
				skipped = append(skipped, v.Name)
				continue
			}
			fmt.Fprintf(&b, "export %s=%s\n", v.Name, shQuote(v.Value))
		}
	case "env":
		for _, v := range vars {
			// A name cannot be quoted: one a shell could not export would
			// run as a command when the file is sourced.
			q, ok := dotenvQuote(v.Value)
			if !shellName.MatchString(v.Name) || !ok {
				skipped = append(skipped, v.Name)
				continue
			}
			fmt.Fprintf(&b, "%s=%s\n", v.Name, q)
		}
	case "docker":
		var multiline []string
		for _, v := range vars {
			// docker's parser trims a line's leading space, takes "#" for a
			// comment and refuses a name with white space in it.
			if v.Name == "" || strings.HasPrefix(strings.TrimLeftFunc(v.Name, unicode.IsSpace), "#") || strings.ContainsAny(v.Name, " \t\n\v\f\r") {
				skipped = append(skipped, v.Name)
				continue
			}
			if strings.ContainsAny(v.Value, "\r\n") {
				multiline = append(multiline, v.Name)
				continue
			}
			fmt.Fprintf(&b, "%s=%s\n", v.Name, v.Value)
		}
		if len(multiline) > 0 {
			return nil, fmt.Errorf("docker's --env-file cannot hold values with line breaks (%s): use -o env or -o sh", strings.Join(multiline, ", "))
		}
	case "json", "yaml":
		m := make(map[string]string, len(vars))
		for _, v := range vars {
			m[v.Name] = v.Value
		}
		var out []byte
		if format == "json" {
			out, err = json.MarshalIndent(m, "", "  ")
			out = append(out, '\n')
		} else {
			out, err = yaml.Marshal(m)
		}
		if err != nil {
			return nil, err
		}
		b.Write(out)
	default:
		return nil, fmt.Errorf("unknown format %q: want one of %s", format, strings.Join(Formats, ", "))
	}
	_, err = io.WriteString(w, b.String())
	return skipped, err
}

// shQuote single-quotes s for a POSIX shell.
func shQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// dotenvQuote leaves plain values bare, single-quotes values without a
// single quote, backslash or line break (literal in docker compose, dotenv
// libraries and a POSIX shell), and double-quotes the rest with escapes
// both read alike ($, \, ", line breaks). A backtick in double quotes is
// where they part: a shell sourcing the file would run what follows, and
// dotenv parsers keep a backslash before it, so such a value cannot be
// written (ok false).
func dotenvQuote(s string) (string, bool) {
	switch {
	case plain.MatchString(s):
		return s, true
	case !strings.ContainsAny(s, "'\\\r\n"): // dotenv parsers read \' as an escape even there
		return "'" + s + "'", true
	case strings.Contains(s, "`"):
		return "", false
	}
	return `"` + dotenvEscapes.Replace(s) + `"`, true
}

var dotenvEscapes = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", `\r`, "$", `\$`)

// Render resolves a container's environment and writes it in format to w,
// saying on errOut what could not be known or written. It returns how many
// variables there are.
func Render(ctx context.Context, kube kubernetes.Interface, src Source, format string, w, errOut io.Writer) (int, error) {
	res, err := Resolve(ctx, kube, src)
	if err != nil {
		return 0, err
	}
	for _, warning := range res.Warnings {
		fmt.Fprintln(errOut, "warning: "+warning)
	}
	skipped, err := Write(w, res.Vars, format)
	if err != nil {
		return 0, err
	}
	if len(skipped) > 0 {
		fmt.Fprintf(errOut, "warning: %s cannot be written safely as %s: left out (-o json or -o yaml keep them)\n", strings.Join(skipped, ", "), format)
	}
	return len(res.Vars), nil
}

// ValidFormat says whether format is one of Formats.
func ValidFormat(format string) bool {
	for _, f := range Formats {
		if f == format {
			return true
		}
	}
	return false
}
