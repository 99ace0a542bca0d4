package environment

import (
	"strings"
	"testing"
)

const good = `apiVersion: kubectl-cz.dev/v1alpha1
kind: Environment
metadata:
  name: core-${USER}
spec:
  namespace: sample-project
  teleport:
    dns: hosts
  env:
  - workload: deployment/core
    file: core.env
  mounts:
  - workload: deploy/core
    dir: ./vol
  intercepts:
  - service: core
    localPort: 3400
    header: x-cz-intercept=${USER}
  run:
  - name: core
    command: [cz-demo, "--price=$$5"]
    envFrom: deployment/core
    env:
      LISTEN: 127.0.0.1:3400
      MODE: ${MODE:-dev}
    ready: 127.0.0.1:3400
`

func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
}

func TestParseGoodFile(t *testing.T) {
	f, err := Parse("cz.yaml", []byte(good), env(map[string]string{"USER": "alice"}))
	if err != nil {
		t.Fatal(err)
	}
	if f.Metadata.Name != "core-alice" || f.Spec.Intercepts[0].Header != "x-cz-intercept=alice" {
		t.Errorf("variables not expanded: %+v", f)
	}
	r := f.Spec.Run[0]
	if r.Command[1] != "--price=$5" || r.Env["MODE"] != "dev" || r.Env["LISTEN"] != "127.0.0.1:3400" {
		t.Errorf("run: %+v", r)
	}
	if f.Spec.Env[0].Format != "env" || f.Spec.Teleport.DNS != "hosts" {
		t.Errorf("defaults: %+v %+v", f.Spec.Env[0], f.Spec.Teleport)
	}
}

// Each mistake is refused with the line and field it is at.
func TestParseRefusesWithLineAndField(t *testing.T) {
	user := env(map[string]string{"USER": "alice"})
	for _, c := range []struct {
		name, from, to, want string
	}{
		{"typo in a field", "    localPort: 3400", "    locaPort: 3400", `cz.yaml:17: unknown field "locaPort"`},
		{"wrong type", "    localPort: 3400", "    localPort: http", "cz.yaml:17: cannot unmarshal"},
		{"bad port", "    localPort: 3400", "    localPort: 70000", "cz.yaml:17: spec.intercepts[0].localPort: want a port number"},
		{"bad header name", "header: x-cz-intercept=${USER}", "header: x y=1", `cz.yaml:18: spec.intercepts[0].header: "x y" is not a valid header name`},
		{"bad workload", "  - workload: deploy/core", "  - workload: deployment", "cz.yaml:13: spec.mounts[0].workload:"},
		{"bad kind", "  - workload: deploy/core", "  - workload: service/core", `cz.yaml:13: spec.mounts[0].workload: "service" is not a workload kind`},
		{"unset variable", "${MODE:-dev}", "${MODE}", "cz.yaml:25: spec.run[0].env.MODE: ${MODE} is not set"},
		{"bad path regex", "    localPort: 3400", "    localPort: 3400\n    pathRegex: \"(\"", `cz.yaml:18: spec.intercepts[0].pathRegex: path: "(" is not a regular expression`},
		{"path without slash", "    localPort: 3400", "    localPort: 3400\n    path: api", `cz.yaml:18: spec.intercepts[0].path: path "api" does not start with /`},
		{"all with a path", "    localPort: 3400", "    localPort: 3400\n    all: true\n    path: /api", `spec.intercepts[0].all: all takes every connection`},
		{"bad dns", "dns: hosts", "dns: dnsmasq", "cz.yaml:8: spec.teleport.dns: want one of"},
		{"apiVersion", "kubectl-cz.dev/v1alpha1", "v1", "cz.yaml:1: apiVersion: want kubectl-cz.dev/v1alpha1"},
		{"bad ready", "ready: 127.0.0.1:3400", "ready: soon", "cz.yaml:26: spec.run[0].ready: want HOST:PORT"},
		{"not yaml", "kind: Environment", "kind: [Environment", "cz.yaml:"},
	} {
		t.Run(c.name, func(t *testing.T) {
			text := strings.Replace(good, c.from, c.to, 1)
			if text == good {
				t.Fatalf("the case changes nothing")
			}
			_, err := Parse("cz.yaml", []byte(text), user)
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("got %v, want one line with %q", err, c.want)
			}
		})
	}
}

// Numbers and booleans may come from variables too, unquoted; a value of
// the wrong type is refused at its line.
func TestVariablesInNumbersAndBooleans(t *testing.T) {
	text := strings.Replace(good, "    localPort: 3400", "    localPort: ${PORT}", 1)
	text = strings.Replace(text, "  - workload: deploy/core\n", "  - workload: deploy/core\n    readOnly: ${RO:-true}\n", 1)
	if text == good {
		t.Fatal("the case changes nothing")
	}
	f, err := Parse("cz.yaml", []byte(text), env(map[string]string{"USER": "alice", "PORT": "3401"}))
	if err != nil {
		t.Fatal(err)
	}
	if f.Spec.Intercepts[0].LocalPort != 3401 || !f.Spec.Mounts[0].ReadOnly {
		t.Errorf("localPort %d readOnly %v", f.Spec.Intercepts[0].LocalPort, f.Spec.Mounts[0].ReadOnly)
	}
	_, err = Parse("cz.yaml", []byte(text), env(map[string]string{"USER": "alice", "PORT": "http"}))
	if err == nil || !strings.Contains(err.Error(), "cz.yaml:18:") || !strings.Contains(err.Error(), "cannot unmarshal") {
		t.Errorf("a port that is no number: %v", err)
	}
	quoted := strings.Replace(good, "    localPort: 3400", `    localPort: "${PORT}"`, 1)
	if _, err := Parse("cz.yaml", []byte(quoted), env(map[string]string{"USER": "alice", "PORT": "3401"})); err == nil {
		t.Error("a quoted variable became a number")
	}
}

// An intercept's rule may name a path, a method and a header expression.
func TestInterceptRule(t *testing.T) {
	text := strings.Replace(good, "    localPort: 3400", "    localPort: 3400\n    path: /orders\n    method: POST", 1)
	f, err := Parse("cz.yaml", []byte(text), env(map[string]string{"USER": "alice"}))
	if err != nil {
		t.Fatal(err)
	}
	m, err := f.Spec.Intercepts[0].Match()
	if err != nil || m.Path != "/orders" || m.Method != "POST" || m.Header != "x-cz-intercept" || m.Value != "alice" {
		t.Errorf("rule %+v %v", m, err)
	}
}

func TestExpand(t *testing.T) {
	lookup := env(map[string]string{"A": "1", "E": ""})
	for in, want := range map[string]string{
		"${A}": "1", "x${A}y": "x1y", "$$": "$", "$$${A}": "$1", "${E:-d}": "d", "${E}": "", "${B:-b}": "b", "$A": "$A", "a $ b": "a $ b",
	} {
		if got, err := expand(in, lookup); err != nil || got != want {
			t.Errorf("expand(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"${B}", "${1}", "${A"} {
		if _, err := expand(in, lookup); err == nil {
			t.Errorf("expand(%q): want an error", in)
		}
	}
}
