// Command walkthrough shows the primitives together on the local cluster, as
// a developer would use them from a laptop (`make demo` runs it in the laptop
// network namespace, which reaches only the API server), from one
// environment file (demo/cz.yaml):
//
//  1. kubectl cz up --dry-run: what would change, and the rights it needs;
//  2. kubectl cz up: teleport, a mount of core's volume, a header intercept
//     of core and a local core with core's environment, in one session;
//  3. a request to frontend, by name, with and without the header;
//  4. core's volume through the mount;
//  5. kubectl cz graph: the environment drawn on the namespace's graph;
//  6. Ctrl-C, and the session list is empty again.
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
	if len(os.Args) != 2 {
		return fmt.Errorf("usage: walkthrough ENVIRONMENT-FILE (demo/cz.yaml)")
	}
	file := os.Args[1]
	dir, err := os.MkdirTemp("", "cz-walkthrough-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	volumes := filepath.Join(dir, "core-volumes")
	if err := os.Mkdir(volumes, 0o755); err != nil {
		return err
	}
	env := []string{"KUBECTL_CZ_STATE_DIR=" + filepath.Join(dir, "state"), "CZ_MOUNT_DIR=" + volumes, "CZ_DEVELOPER=me"}

	fmt.Printf("\n== 1. kubectl cz up -f %s --dry-run   (what would change, and the rights it needs)\n", file)
	dry, err := start("kubectl", env, "cz", "up", "-f", file, "--dry-run")
	if err != nil {
		return err
	}
	if err := dry.waitFor("rights:", 60*time.Second); err != nil {
		return err
	}
	dry.stop()

	fmt.Printf("\n== 2. sudo -E kubectl cz up -f %s   (teleport, mount, intercept, a local core: one file, one session)\n", file)
	up, err := start("kubectl", env, "cz", "up", "-f", file)
	if err != nil {
		return err
	}
	defer up.stop()
	if err := up.waitFor("environment core-on-my-laptop active", 120*time.Second); err != nil {
		return err
	}

	fmt.Println("\n== 3. curl -H 'x-cz-intercept: me' http://frontend/   (by its cluster name, from the laptop)")
	h, err := get("me")
	if err != nil {
		return err
	}
	printHop(h, "    ")
	fmt.Println("\n   and without the header, core stays the cluster's:")
	if h, err = get(""); err != nil {
		return err
	}
	printHop(h, "    ")

	fmt.Println("\n== 4. core's volume, here: cat core-volumes/data/config/settings.yaml")
	b, err := os.ReadFile(filepath.Join(volumes, "data", "config", "settings.yaml"))
	if err != nil {
		return err
	}
	fmt.Print(indent(string(b), "    | "))

	fmt.Println("\n== 5. kubectl cz -n sample-project graph   (the environment, drawn on the namespace's graph)")
	out, err := command(env, "kubectl", "cz", "-n", namespace, "graph")
	if err != nil {
		return err
	}
	fmt.Print(indent(out, "    | "))

	fmt.Println("\n== 6. Ctrl-C: every part stops in reverse order and is put back")
	up.stop()
	out, _ = command(env, "kubectl", "cz", "-n", namespace, "session", "list")
	fmt.Printf("\n   kubectl cz session list:\n%s", indent(out, "    | "))
	return nil
}

func command(env []string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
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
