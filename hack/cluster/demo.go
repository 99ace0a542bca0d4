package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"
)

const demoNamespace = "sample-project"

// hop mirrors the JSON each demo service answers with.
type hop struct {
	Service string            `json:"service"`
	Pod     string            `json:"pod"`
	Headers map[string]string `json:"headers"`
	Calls   []hop             `json:"calls"`
	Error   string            `json:"error"`
}

// demo deploys the sample-project graph, waits for it with progress, and
// prints one request's path through it, sent through the API server's service
// proxy (the same way from the host and from the laptop namespace).
func (l layout) demo(ctx context.Context, args []string) error {
	manifest := "demo/sample-project.yaml"
	if len(args) > 0 {
		manifest = args[0]
	}
	if err := l.kubectl("apply", "-f", manifest).run(); err != nil {
		return fmt.Errorf("deploy %s: %w", manifest, err)
	}
	cs, err := l.client()
	if err != nil {
		return err
	}
	since := l.kubeletStart()
	for _, d := range []string{"frontend", "core", "leaf"} {
		if err := waitDeployment(ctx, cs, demoNamespace, d, 120*time.Second); err != nil {
			explainNamespace(cs, demoNamespace)
			return err
		}
	}
	if err := waitPods(ctx, cs, demoNamespace, "app.kubernetes.io/part-of=sample-project", since, 120*time.Second); err != nil {
		explainNamespace(cs, demoNamespace)
		return err
	}
	if err := waitEndpoints(ctx, cs, demoNamespace, since, 60*time.Second); err != nil {
		explainNamespace(cs, demoNamespace)
		return err
	}
	// The first request can meet a graph that is not wired yet (a Service's
	// rules not yet in kube-proxy, a name not yet in CoreDNS): poll, each try
	// bounded, and say what answered last if it never comes.
	var body []byte
	var last error
	shown := ""
	if err := waitFor(ctx, 60*time.Second, "a request through the graph", func() bool {
		try, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		// Through the API server's service proxy, with the header a developer's
		// intercept would match on: every hop shows it was passed along.
		body, last = cs.CoreV1().RESTClient().Get().Namespace(demoNamespace).Resource("services").
			Name("http:frontend:http").SubResource("proxy").Suffix("/").
			SetHeader("x-cz-intercept", "demo").DoRaw(try)
		if last != nil && len(body) > 0 {
			last = fmt.Errorf("%w: %s", last, bytes.TrimSpace(body))
		}
		if msg := fmt.Sprint(last); last != nil && msg != shown {
			fmt.Printf("  the graph answered: %.300s\n", msg)
			shown = msg
		}
		return last == nil
	}, "kubectl -n "+demoNamespace+" get pods,endpointslices"); err != nil {
		explainNamespace(cs, demoNamespace)
		return fmt.Errorf("%w; last answer: %v", err, last)
	}
	var root hop
	if err := json.Unmarshal(body, &root); err != nil {
		return fmt.Errorf("frontend answered %q: %w", body, err)
	}
	fmt.Println("\nOne request's path through sample-project (GET http://frontend/ with x-cz-intercept: demo):")
	printHop(os.Stdout, root, "  ", "")
	fmt.Printf(`
Next, try (make build puts kubectl-cz in bin/):
  export KUBECONFIG=%[1]s PATH=%[2]s:$PATH
  kubectl -n sample-project get pods,svc
  kubectl cz version
  make laptop-shell      # a shell in the laptop network namespace: only the API server is reachable

  # In the laptop shell: a local "core", then send the cluster's requests with your header to it
  ROLE=core POD_NAME=my-laptop LISTEN=127.0.0.1:3000 cz-demo &
  kubectl cz -n sample-project intercept service core --local-port 3000 --header x-cz-intercept=me
  # From this machine (inside the cluster network), with and without the header:
  curl -H 'x-cz-intercept: me' http://$(kubectl -n sample-project get svc frontend -o jsonpath='{.spec.clusterIP}')/
  kubectl cz -n sample-project session list
`, l.adminKubeconfig(), l.searchPath())
	return nil
}

func printHop(w *os.File, h hop, indent, arrow string) {
	line := fmt.Sprintf("%s%s%s (pod %s)", indent, arrow, h.Service, h.Pod)
	if h.Error != "" {
		line = fmt.Sprintf("%s%s%s: ERROR %s", indent, arrow, h.Service, h.Error)
	}
	if len(h.Headers) > 0 {
		line += fmt.Sprintf(" headers %v", h.Headers)
	}
	fmt.Fprintln(w, line)
	for _, c := range h.Calls {
		printHop(w, c, indent+strings.Repeat(" ", len(arrow)), "-> ")
	}
}
