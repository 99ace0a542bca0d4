// Command walkthrough shows the primitives together on the local cluster, as
// a developer would use them from a laptop (`make demo` runs it in the laptop
// network namespace, which reaches only the API server):
//
//  1. kubectl cz teleport deployment core: the cluster's names work here, and
//     core's environment is in a file;
//  2. a local core runs with that environment;
//  3. kubectl cz intercept service core --header x-cz-intercept=me;
//  4. a request to frontend, by name, with and without the header;
//  5. Ctrl-C on both, and the session list is empty again.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

const namespace = "sample-project"

type hop struct {
	Service string `json:"service"`
	Pod     string `json:"pod"`
	Calls   []hop  `json:"calls"`
	Error   string `json:"error"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "walkthrough:", err)
		os.Exit(1)
	}
}

// proc is a background command whose output is watched for a line.
type proc struct {
	cmd   *exec.Cmd
	lines chan string
}

func start(name string, env []string, args ...string) (*proc, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, lines: make(chan string, 100)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
		close(p.lines)
	}()
	return p, nil
}

// waitFor echoes the process's lines, indented, until one contains s.
func (p *proc) waitFor(s string, timeout time.Duration) error {
	deadline := time.After(timeout)
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				return fmt.Errorf("%s exited before saying %q", p.cmd.Path, s)
			}
			fmt.Println("    | " + line)
			if strings.Contains(line, s) {
				return nil
			}
		case <-deadline:
			return fmt.Errorf("no %q after %s", s, timeout)
		}
	}
}

// stop sends SIGTERM, as Ctrl-C would, and echoes what the process says.
func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	for line := range p.lines {
		fmt.Println("    | " + line)
	}
	_ = p.cmd.Wait()
}

func run() error {
	dir, err := os.MkdirTemp("", "cz-walkthrough-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	envFile := filepath.Join(dir, "core.env")
	state := []string{"KUBECTL_CZ_STATE_DIR=" + filepath.Join(dir, "state")}

	fmt.Println("\n== 1. sudo -E kubectl cz teleport deployment core -n sample-project --env-file core.env")
	tp, err := start("kubectl", state, "cz", "-n", namespace, "teleport", "deployment", "core", "--env-file", envFile)
	if err != nil {
		return err
	}
	defer tp.stop()
	if err := tp.waitFor("teleport active", 60*time.Second); err != nil {
		return err
	}

	fmt.Println("\n== 2. a local core, with the cluster's environment: set -a; . ./core.env; set +a; cz-demo")
	local, err := start("sh", nil, "-c", `set -a; . "$1"; set +a; LISTEN=127.0.0.1:3000 SEED_DIR="$2" POD_NAME=my-laptop exec cz-demo`, "sh", envFile, dir)
	if err != nil {
		return err
	}
	defer func() { _ = local.cmd.Process.Kill(); _ = local.cmd.Wait() }()
	if err := local.waitFor("listening", 20*time.Second); err != nil {
		return err
	}

	fmt.Println("\n== 3. kubectl cz intercept service core --local-port 3000 --header x-cz-intercept=me")
	icpt, err := start("kubectl", state, "cz", "-n", namespace, "intercept", "service", "core", "--local-port", "3000", "--header", "x-cz-intercept=me")
	if err != nil {
		return err
	}
	if err := icpt.waitFor("intercept active", 90*time.Second); err != nil {
		icpt.stop()
		return err
	}

	fmt.Println("\n== 4. curl -H 'x-cz-intercept: me' http://frontend/   (by its cluster name, from the laptop)")
	// New connections reach the interceptor once kube-proxy has its rules.
	var h hop
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if h, err = get("me"); err != nil {
			break
		}
		if len(h.Calls) == 1 && h.Calls[0].Pod == "my-laptop" || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		icpt.stop()
		return err
	}
	printHop(h, "    ")
	fmt.Println("\n   and without the header, core stays the cluster's:")
	if h, err = get(""); err != nil {
		icpt.stop()
		return err
	}
	printHop(h, "    ")

	fmt.Println("\n== 5. Ctrl-C: the intercept restores the Service, teleport restores this machine")
	icpt.stop()
	tp.stop()
	out, _ := exec.Command("kubectl", "cz", "-n", namespace, "session", "list").CombinedOutput()
	fmt.Printf("\n   kubectl cz session list:\n%s", indent(string(out), "    | "))
	return nil
}

func get(header string) (hop, error) {
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://frontend/", nil)
	if header != "" {
		req.Header.Set("x-cz-intercept", header)
	}
	client := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return hop{}, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var h hop
	if err := json.Unmarshal(body, &h); err != nil {
		return hop{}, fmt.Errorf("frontend answered %q", body)
	}
	return h, nil
}

func printHop(h hop, in string) {
	where := "cluster"
	if h.Pod == "my-laptop" {
		where = "THIS LAPTOP"
	}
	line := fmt.Sprintf("%s%s (pod %s, %s)", in, h.Service, h.Pod, where)
	if h.Error != "" {
		line += " ERROR " + h.Error
	}
	fmt.Println(line)
	child := strings.Repeat(" ", len(strings.TrimSuffix(in, "-> "))) + "   -> "
	for _, c := range h.Calls {
		printHop(c, child)
	}
}

func indent(s, prefix string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString(prefix + l + "\n")
	}
	return b.String()
}
