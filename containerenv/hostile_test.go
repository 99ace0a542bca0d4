package containerenv

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unicode"

	"github.com/compose-spec/compose-go/v2/dotenv"
)

// A ConfigMap or Secret value is whatever its writer chose. Every format
// goes through the program that consumes it, and must come back as it was
// and run nothing: the canary file must never appear.

const pem = "-----BEGIN PRIVATE KEY-----\nMIIBVgIBADANBgkqhkiG9w0BAQEFAASCAUAwggE8AgEAAkEAq7BFUpkGp3+LQmlQ\nYx2eqNDmoQ5nBq==\n-----END PRIVATE KEY-----\n"

func hostile(canary string) []Var {
	values := []string{
		"", "plain", "it's", `"double"`, `back\slash\`, `\n not a newline`, "trailing\\",
		"$(touch " + canary + ")", "`touch " + canary + "`", "${PATH}", "$HOME and $$", "x'$(touch " + canary + ")'y",
		"\"; touch " + canary + "; \"", "'; touch " + canary + "; '", "a\nb\n", "\ncarriage\r\nreturn", pem,
		"# not a comment", " leading and trailing space ", "tab\there", "ünïcode ✓", "'''", `\"\$\` + "`",
		"x=y=z", "export Y=1",
	}
	var vars []Var
	for i, v := range values {
		vars = append(vars, Var{Name: fmt.Sprintf("V%02d", i), Value: v})
	}
	// Names a shell cannot export are left out, never written as commands.
	return append(vars, Var{Name: "X;touch${IFS}" + canary, Value: "1"}, Var{Name: "a.b", Value: "dots"})
}

func render(t *testing.T, vars []Var, format string) (string, []string) {
	t.Helper()
	var b bytes.Buffer
	skipped, err := Write(&b, vars, format)
	if err != nil {
		t.Fatal(err)
	}
	return b.String(), skipped
}

// sourced runs `set -a; . file` in sh and returns the variables it got.
func sourced(t *testing.T, file string) map[string]string {
	t.Helper()
	out, err := exec.Command("sh", "-c", `set -a; . "$0" && env -0`, file).Output()
	if err != nil {
		t.Fatalf("sh could not source the file: %v", err)
	}
	got := map[string]string{}
	for _, kv := range strings.Split(string(out), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			got[k] = v
		}
	}
	return got
}

func canaryPath(t *testing.T) string {
	return filepath.Join(t.TempDir(), "ran")
}

func noCanary(t *testing.T, canary, format string) {
	t.Helper()
	if _, err := os.Stat(canary); err == nil {
		t.Fatalf("%s: consuming the file ran a command from a value", format)
	}
}

func TestHostileValuesSh(t *testing.T) {
	canary := canaryPath(t)
	vars := hostile(canary)
	text, skipped := render(t, vars, "sh")
	file := filepath.Join(t.TempDir(), "env.sh")
	os.WriteFile(file, []byte(text), 0o600)
	got := sourced(t, file)
	// eval too, as `eval "$(kubectl cz env ...)"` does.
	if err := exec.Command("sh", "-c", `eval "$(cat "$0")"`, file).Run(); err != nil {
		t.Fatal(err)
	}
	noCanary(t, canary, "sh")
	for _, v := range vars[:len(vars)-2] {
		if got[v.Name] != v.Value {
			t.Errorf("sh: %s=%q came back as %q", v.Name, v.Value, got[v.Name])
		}
	}
	if len(skipped) != 2 {
		t.Errorf("sh skipped %v, want the two names a shell cannot export", skipped)
	}
}

// The env format is a dotenv file: exact through docker compose's parser, and
// safe to source with sh (whose double quotes keep \n as two characters,
// so only values without line breaks come back exact there).
func TestHostileValuesEnv(t *testing.T) {
	canary := canaryPath(t)
	vars := hostile(canary)
	text, skipped := render(t, vars, "env")
	file := filepath.Join(t.TempDir(), ".env")
	os.WriteFile(file, []byte(text), 0o600)
	// docker compose's own parser, the main reader of .env files.
	parsed, err := dotenv.ParseWithLookup(strings.NewReader(text), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	shell := sourced(t, file)
	noCanary(t, canary, "env sourced by sh")
	// A backtick in a value that needs double quotes: no quoting is both
	// safe to source and exact for dotenv parsers, so it is left out.
	unwritable := map[string]bool{}
	for _, v := range vars[:len(vars)-2] {
		if _, ok := dotenvQuote(v.Value); !ok {
			unwritable[v.Name] = true
			if _, written := parsed[v.Name]; written {
				t.Errorf("%s=%q was written", v.Name, v.Value)
			}
			continue
		}
		if parsed[v.Name] != v.Value {
			t.Errorf("dotenv: %s=%q came back as %q", v.Name, v.Value, parsed[v.Name])
		}
		if !strings.ContainsAny(v.Value, "\r\n") && shell[v.Name] != v.Value {
			t.Errorf("sh: %s=%q came back as %q", v.Name, v.Value, shell[v.Name])
		}
	}
	if len(unwritable) != 1 || len(skipped) != 2+len(unwritable) {
		t.Errorf("env skipped %v (unwritable %v)", skipped, unwritable)
	}
}

// dockerEnvFile reads a file by the rules of `docker run --env-file`
// (docker/cli opts.ParseEnvFile): each line's leading white space is
// trimmed, "#" starts a comment, the name ends at the first "=", a name
// with white space is an error, the value is taken literally.
func dockerEnvFile(t *testing.T, text string) map[string]string {
	t.Helper()
	out := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimLeftFunc(sc.Text(), unicode.IsSpace)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		if !ok || name == "" || strings.ContainsAny(name, " \t\n\v\f\r") {
			t.Fatalf("docker would refuse the line %q", line)
		}
		out[name] = value
	}
	return out
}

func TestHostileValuesDocker(t *testing.T) {
	canary := canaryPath(t)
	all := hostile(canary)
	var vars []Var
	for _, v := range all {
		if !strings.ContainsAny(v.Value, "\r\n") {
			vars = append(vars, v)
		}
	}
	// Names docker's parser would misread are left out.
	vars = append(vars, Var{Name: "# comment", Value: "x"}, Var{Name: "A B", Value: "x"})
	text, skipped := render(t, vars, "docker")
	got := dockerEnvFile(t, text)
	for _, v := range vars[:len(vars)-2] {
		if got[v.Name] != v.Value {
			t.Errorf("docker: %s=%q came back as %q", v.Name, v.Value, got[v.Name])
		}
	}
	if len(skipped) != 2 {
		t.Errorf("docker skipped %v", skipped)
	}
	// Line breaks cannot be carried: one clear refusal.
	if _, err := Write(&bytes.Buffer{}, all, "docker"); err == nil || !strings.Contains(err.Error(), "line breaks") {
		t.Errorf("docker with PEM blocks: %v", err)
	}
}
