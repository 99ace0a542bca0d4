package plugin

import (
	"context"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-cz/kubectl-cz/containerenv"
	"github.com/kubectl-cz/kubectl-cz/workload"
)

type envOptions struct {
	flags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams

	workload  workload.Ref
	container string
	output    string
}

// NewEnvCommand returns `kubectl cz env`.
func NewEnvCommand(flags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &envOptions{flags: flags, IOStreams: streams}
	cmd := &cobra.Command{
		Use:   "env (deployment|statefulset|pod) NAME [-c CONTAINER] [-o sh|env|docker|json|yaml]",
		Short: "Print the environment a workload's container gets in the cluster",
		Long: `Print the environment the kubelet gives a workload's container, so a local process can run
with it: env and envFrom (ConfigMaps and Secrets, with their prefixes), field and resource
references (taken from a running pod of the workload), $(VAR) expansion, and the Service link
variables (FOO_SERVICE_HOST, FOO_PORT_80_TCP, ...) unless the pod spec turns them off. Variables
the image itself sets (PATH, ...) are not part of it.

Secret values are printed in clear: mind where the output goes. Nothing in the cluster changes.`,
		Example: `  # Load deployment core's environment into this shell
  eval "$(kubectl cz env deployment core)"

  # A .env file for docker compose, an IDE or a dotenv library
  kubectl cz env deploy/core -o env > core.env

  # For docker run --env-file, from the sidecar container of a pod
  kubectl cz env pod core-5d8f7-abcde -c sidecar -o docker > core.docker-env`,
		RunE: func(c *cobra.Command, args []string) error {
			if err := o.complete(c, args); err != nil {
				return err
			}
			return o.run(c.Context())
		},
	}
	cmd.ValidArgsFunction = func(c *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		return completeWorkload(c, flags, args)
	}
	f := cmd.Flags()
	f.StringVarP(&o.container, "container", "c", "", "Container whose environment to print (default: the pod's default container, else its first)")
	f.StringVarP(&o.output, "output", "o", "sh", "Format: "+strings.Join(containerenv.Formats, ", "))
	_ = cmd.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return containerenv.Formats, cobra.ShellCompDirectiveNoFileComp
	})
	return cmd
}

// completeWorkload completes "KIND NAME" of a workload; nothing after it.
func completeWorkload(c *cobra.Command, flags *genericclioptions.ConfigFlags, args []string) ([]string, cobra.ShellCompDirective) {
	switch len(args) {
	case 0:
		return workload.Kinds, cobra.ShellCompDirectiveNoFileComp
	case 1:
		a, err := resolveAccess(flags)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		names, _ := workload.Names(c.Context(), a.Kube, a.Namespace, args[0])
		return names, cobra.ShellCompDirectiveNoFileComp
	}
	return nil, cobra.ShellCompDirectiveNoFileComp
}

func (o *envOptions) complete(c *cobra.Command, args []string) error {
	args = workload.SplitArgs(args)
	if len(args) != 2 {
		return usageError(c, "want: kubectl cz env (deployment|statefulset|pod) NAME")
	}
	ref, err := workload.New(args[0], args[1])
	if err != nil {
		return usageError(c, "%v", err)
	}
	o.workload = ref
	if !containerenv.ValidFormat(o.output) {
		return usageError(c, "unknown output format %q: want one of %s", o.output, strings.Join(containerenv.Formats, ", "))
	}
	return nil
}

func (o *envOptions) run(ctx context.Context) error {
	a, err := resolveAccess(o.flags)
	if err != nil {
		return err
	}
	src, err := workload.Lookup(ctx, a.Kube, a.Namespace, o.workload)
	if err != nil {
		return err
	}
	if src.Container, err = workload.PickContainer(o.ErrOut, src, o.container); err != nil {
		return err
	}
	_, err = containerenv.Render(ctx, a.Kube, src, o.output, o.Out, o.ErrOut)
	return err
}
