// Package plugin holds the `kubectl cz` command tree. It parses flags, resolves
// the kubeconfig through cli-runtime and hands the work to the packages that
// implement each primitive.
package plugin

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// extraCommands are added by builds with extra tags (the test primitive).
var extraCommands []func(*genericclioptions.ConfigFlags, genericiooptions.IOStreams) *cobra.Command

// displayName is what usage lines show: users type `kubectl cz`, not the binary's name.
const displayName = "kubectl cz"

// NewRootCommand builds the `kubectl cz` command with kubectl's own kubeconfig
// flags (-n, --context, --kubeconfig, --as, ...) on every subcommand.
func NewRootCommand(streams genericiooptions.IOStreams) *cobra.Command {
	configFlags := genericclioptions.NewConfigFlags(true)
	root := &cobra.Command{
		Use:   "kubectl-cz",
		Short: "Re-shape a shared cluster's service graph from your laptop, and put it back",
		Long: `kubectl cz alters a shared Kubernetes cluster's service graph in small, recorded and
reversible steps, so one developer gets a private variant of a shared environment:

  teleport   make the laptop behave as if it were inside the cluster
  intercept  send a Service's traffic (all of it, or requests with your header) to the laptop
  mount      see a pod's volumes as a local folder
  env        print the environment a workload's container gets, to run it locally
  up         start a whole environment from one file (cz.yaml): all of the above, and
             the local processes that stand in for Services
  graph      draw a namespace's microservice graph, and what sessions altered on it
  session    list, show and close the recorded alterations; closing puts them back (a mount's
             ephemeral container stays in its pod, stopped: Kubernetes cannot remove one)

It uses the kubeconfig flags kubectl users know (-n, --context, --kubeconfig, ...).`,
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: displayName},
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	root.SetIn(streams.In)
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError(c, "%s", err.Error())
	})
	configFlags.AddFlags(root.PersistentFlags())

	root.AddCommand(NewVersionCommand(configFlags, streams))
	root.AddCommand(NewInterceptCommand(configFlags, streams))
	root.AddCommand(NewTeleportCommand(configFlags, streams))
	root.AddCommand(NewMountCommand(configFlags, streams))
	root.AddCommand(NewEnvCommand(configFlags, streams))
	root.AddCommand(NewUpCommand(configFlags, streams))
	root.AddCommand(NewRunCommand(configFlags, streams))
	root.AddCommand(NewReplayCommand(streams))
	root.AddCommand(NewGraphCommand(configFlags, streams))
	root.AddCommand(NewSessionCommand(configFlags, streams))
	for _, extra := range extraCommands {
		root.AddCommand(extra(configFlags, streams))
	}
	return root
}

// Execute runs the command tree and turns an error into kubectl's one-line
// "error: ..." form; it returns the process exit code.
func Execute(root *cobra.Command, streams genericiooptions.IOStreams) int {
	if err := root.Execute(); err != nil {
		// kubectl cz run ends with its command's exit code, and no words.
		var exit interface{ ExitStatus() int }
		if errors.As(err, &exit) {
			return exit.ExitStatus()
		}
		msg := strings.TrimSpace(err.Error())
		if !strings.HasPrefix(msg, "error: ") {
			msg = "error: " + msg
		}
		fmt.Fprintln(streams.ErrOut, msg)
		var ue *errUsage
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	return 0
}

// errUsage is a mistake in how a command was called; the message says which
// help to read.
type errUsage struct{ msg string }

func (e *errUsage) Error() string { return e.msg }

func usageError(cmd *cobra.Command, format string, args ...any) error {
	return &errUsage{msg: fmt.Sprintf(format, args...) + fmt.Sprintf(" (see '%s -h')", cmd.CommandPath())}
}
