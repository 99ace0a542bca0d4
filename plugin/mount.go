package plugin

import (
	"context"
	"os"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-cz/kubectl-cz/lifecycle"
	"github.com/kubectl-cz/kubectl-cz/mount"
	"github.com/kubectl-cz/kubectl-cz/workload"
)

type mountOptions struct {
	flags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams

	workload   workload.Ref
	dir        string
	container  string
	readOnly   bool
	compress   bool
	agentImage string
	pullPolicy string
	sessionID  string
}

// NewMountCommand returns `kubectl cz mount`.
func NewMountCommand(flags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &mountOptions{flags: flags, IOStreams: streams}
	cmd := &cobra.Command{
		Use:   "mount (deployment|statefulset|pod) NAME DIR [-c CONTAINER] [--read-only]",
		Short: "See a pod's volumes as a local folder, read and write",
		Long: `Show the volumes of a workload's container (emptyDir, PVC, ConfigMap, Secret, ...) under a local
folder, each at its mount path (/data appears as DIR/data), so a local editor, grep or git work
on them. Changes go to the pod at once.

kubectl cz adds its file server to a running pod of the workload as an ephemeral container, as the
container's user and with its volume mounts, so images without a shell work too; this machine
reaches it only through port-forward (SFTP). Kubernetes cannot remove an ephemeral container: it
stays in the pod's spec, stopped, until the pod is replaced; the file server ends itself 30 s after
the last connection. Mounting needs root (or fusermount); Ctrl-C unmounts.`,
		Example: `  # deployment core's volumes in ./core-volumes
  mkdir core-volumes && sudo -E kubectl cz mount deployment core ./core-volumes

  # Read-only, the volumes of the sidecar container of a pod
  sudo -E kubectl cz mount pod web-0 /mnt/web -c sidecar --read-only`,
		RunE: func(c *cobra.Command, args []string) error {
			if err := o.complete(c, args); err != nil {
				return err
			}
			return o.run(c.Context())
		},
	}
	cmd.ValidArgsFunction = func(c *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) < 2 {
			return completeWorkload(c, flags, args)
		}
		return nil, cobra.ShellCompDirectiveFilterDirs
	}
	f := cmd.Flags()
	f.StringVarP(&o.container, "container", "c", "", "Container whose volumes to mount (default: the pod's default container, else its first)")
	f.BoolVar(&o.readOnly, "read-only", false, "Mount read-only")
	f.BoolVar(&o.compress, "compress", false, "Read big files zstd-compressed where the file server finds they shrink (for a slow link to the cluster: logs and text come at a third to a tenth of their bytes; on a fast one the pod's compression is the slower part)")
	f.StringVar(&o.agentImage, "agent-image", DefaultAgentImage(), "Image of the file server")
	f.StringVar(&o.pullPolicy, "agent-pull-policy", string(corev1.PullIfNotPresent), "Pull policy of the agent image: IfNotPresent, Always or Never")
	f.StringVar(&o.sessionID, "session", "", "Session to record the mount in (default: a new one)")
	return cmd
}

func (o *mountOptions) complete(c *cobra.Command, args []string) error {
	args = workload.SplitArgs(args)
	if len(args) != 3 {
		return usageError(c, "want: kubectl cz mount (deployment|statefulset|pod) NAME DIR")
	}
	ref, err := workload.New(args[0], args[1])
	if err != nil {
		return usageError(c, "%v", err)
	}
	o.workload = ref
	if st, err := os.Stat(args[2]); err != nil || !st.IsDir() {
		return usageError(c, "%s is not a folder: create it first", args[2])
	}
	o.dir = args[2]
	return checkPullPolicy(o.pullPolicy)
}

func (o *mountOptions) run(ctx context.Context) error {
	a, err := resolveAccess(o.flags)
	if err != nil {
		return err
	}
	part := newMountPart(a, o.IOStreams, &mount.Part{Workload: o.workload, Container: o.container, Dir: o.dir, ReadOnly: o.readOnly, Compress: o.compress,
		Image: o.agentImage, Pull: corev1.PullPolicy(o.pullPolicy)})
	return lifecycle.Run(ctx, lifecycleConfig(a, o.flags, o.sessionID, o.IOStreams, ": kubectl cz session close %[1]s"), part)
}

func newMountPart(a *clusterAccess, streams genericiooptions.IOStreams, p *mount.Part) *mount.Part {
	p.Clients, p.Out, p.ErrOut, p.Start = a.Clients, streams.Out, streams.ErrOut, time.Now()
	if p.Namespace == "" {
		p.Namespace = a.Namespace
	}
	return p
}
