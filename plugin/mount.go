package plugin

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/pkg/sftp"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-cz/kubectl-cz/lifecycle"
	"github.com/kubectl-cz/kubectl-cz/mount"
	"github.com/kubectl-cz/kubectl-cz/session"
)

type mountOptions struct {
	flags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams

	kind, name, dir string
	container       string
	readOnly        bool
	agentImage      string
	pullPolicy      string
	sessionID       string
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
	f.StringVar(&o.agentImage, "agent-image", DefaultAgentImage(), "Image of the file server")
	f.StringVar(&o.pullPolicy, "agent-pull-policy", string(corev1.PullIfNotPresent), "Pull policy of the agent image: IfNotPresent, Always or Never")
	f.StringVar(&o.sessionID, "session", "", "Session to record the mount in (default: a new one)")
	return cmd
}

func (o *mountOptions) complete(c *cobra.Command, args []string) error {
	if len(args) == 2 {
		if kind, name, ok := strings.Cut(args[0], "/"); ok {
			args = []string{kind, name, args[1]}
		}
	}
	if len(args) != 3 {
		return usageError(c, "want: kubectl cz mount (deployment|statefulset|pod) NAME DIR")
	}
	kind, ok := workloadKind(args[0])
	if !ok {
		return usageError(c, "%q is not a workload kind: want deployment, statefulset or pod", args[0])
	}
	o.kind, o.name = kind, args[1]
	dir, err := filepath.Abs(args[2])
	if err != nil {
		return err
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return usageError(c, "%s is not a folder: create it first", args[2])
	}
	o.dir = dir
	return nil
}

func (o *mountOptions) run(parent context.Context) error {
	start := time.Now()
	ctx, stop := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	defer stop()
	a, err := resolveAccess(o.flags)
	if err != nil {
		return err
	}
	cfg, err := o.flags.ToRESTConfig()
	if err != nil {
		return err
	}
	src, err := workloadSource(ctx, a.Kube, a.Namespace, o.kind, o.name)
	if err != nil {
		return err
	}
	if src.Pod == nil {
		return fmt.Errorf("%s %q has no running pod to mount", o.kind, o.name)
	}
	container, err := pickContainer(o.ErrOut, src, o.container)
	if err != nil {
		return err
	}
	mounts, err := mount.Paths(src.Pod, container)
	if err != nil {
		return err
	}
	if err := requireAccess(ctx, a, a.Namespace, "mount", append(journalAccess,
		access{"update", "", "pods/ephemeralcontainers"}, tunnelAccess,
		access{"create", "", "secrets"}, access{"get", "", "secrets"}, access{"delete", "", "secrets"})...); err != nil {
		return err
	}
	return lifecycle.Run(ctx, lifecycleConfig(a, o.flags, o.sessionID, o.IOStreams, ": kubectl cz session close %[1]s"), lifecycle.Func("mount "+o.kind+" "+o.name,
		func(ctx context.Context, s *session.Session, active func()) error {
			spec := mount.Spec{Pod: src.Pod, Container: container, Dir: o.dir, ReadOnly: o.readOnly, Image: o.agentImage, Pull: corev1.PullPolicy(o.pullPolicy)}
			agent, err := mount.AddAgent(ctx, s, a.Kube, spec, o.Out)
			if err != nil {
				return err
			}
			remote, err := mount.NewRedialer(func() (*sftp.Client, func(), error) {
				return mount.Connect(ctx, cfg, a.Kube, a.Namespace, src.Pod.Name, agent)
			})
			if err != nil {
				return err
			}
			defer remote.Close()
			var paths []string
			for _, m := range mounts {
				paths = append(paths, filepath.Join(o.dir, m.MountPath))
			}
			return mount.Serve(ctx, s, remote, mounts, o.dir, o.readOnly, mount.LocalOwner(src.Pod, container), func() {
				fmt.Fprintf(o.Out, "mounted after %.1fs: pod %s container %s at %s (Ctrl-C to unmount)\n", time.Since(start).Seconds(), src.Pod.Name, container, strings.Join(paths, ", "))
				active()
			})
		}))
}
