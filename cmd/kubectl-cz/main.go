// Command kubectl-cz is the kubectl plugin binary: kubectl finds it on PATH and
// runs it for `kubectl cz ...`.
package main

import (
	"os"

	"k8s.io/cli-runtime/pkg/genericiooptions"
	_ "k8s.io/client-go/plugin/pkg/client/auth" // exec, OIDC and cloud auth providers of the user's kubeconfig

	"github.com/kubectl-cz/kubectl-cz/netstack/sandbox"
	"github.com/kubectl-cz/kubectl-cz/plugin"
)

func main() {
	if sandbox.IsInit() {
		// kubectl cz run re-executed this binary as its sandbox's first process.
		os.Exit(sandbox.Init())
	}
	streams := genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	os.Exit(plugin.Execute(plugin.NewRootCommand(streams), streams))
}
