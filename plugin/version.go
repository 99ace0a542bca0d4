package plugin

import (
	"encoding/json"
	"fmt"
	"runtime"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/discovery"
	"sigs.k8s.io/yaml"
)

// Set by the linker (see the Makefile): the release version and commit.
var (
	Version   = "v0.0.0-dev"
	GitCommit = ""
)

// ClientVersion describes this build of kubectl-cz.
type ClientVersion struct {
	Version   string `json:"version"`
	GitCommit string `json:"gitCommit,omitempty"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
	// AgentImage is what intercept and mount run in the cluster by default.
	AgentImage string `json:"agentImage"`
}

// VersionInfo is what `kubectl cz version -o json|yaml` prints.
type VersionInfo struct {
	ClientVersion ClientVersion `json:"clientVersion"`
	ServerVersion *version.Info `json:"serverVersion,omitempty"`
}

// VersionOptions follows kubectl's Complete/Validate/Run shape.
type VersionOptions struct {
	configFlags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams

	Output     string
	ClientOnly bool

	discovery discovery.DiscoveryInterface
}

// NewVersionCommand returns `kubectl cz version`.
func NewVersionCommand(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &VersionOptions{configFlags: configFlags, IOStreams: streams}
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the kubectl-cz version and the version of the cluster it talks to",
		Example: `  # Client and server versions
  kubectl cz version

  # Only this plugin's version, without contacting a cluster
  kubectl cz version --client

  # As JSON, for scripts
  kubectl cz version -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Complete(); err != nil {
				return err
			}
			if err := o.Validate(cmd); err != nil {
				return err
			}
			return o.Run()
		},
	}
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "Output format: json or yaml (default: text)")
	cmd.Flags().BoolVar(&o.ClientOnly, "client", false, "Print only the client version; do not contact the cluster")
	return cmd
}

// Complete builds the discovery client unless only the client version is asked for.
func (o *VersionOptions) Complete() error {
	if o.ClientOnly || o.discovery != nil {
		return nil
	}
	dc, err := o.configFlags.ToDiscoveryClient()
	if err != nil {
		return fmt.Errorf("cannot load the kubeconfig: %w", err)
	}
	o.discovery = dc
	return nil
}

// Validate checks the output format.
func (o *VersionOptions) Validate(cmd *cobra.Command) error {
	switch o.Output {
	case "", "json", "yaml":
		return nil
	}
	return usageError(cmd, "--output must be json or yaml, not %q", o.Output)
}

// Run prints the versions. The client version is printed even when the server
// cannot be reached, and the error then says which server was tried.
func (o *VersionOptions) Run() error {
	info := VersionInfo{ClientVersion: ClientVersion{
		Version:   Version,
		GitCommit: GitCommit,
		GoVersion: runtime.Version(),
		Platform:  runtime.GOOS + "/" + runtime.GOARCH,

		AgentImage: DefaultAgentImage(),
	}}
	var serverErr error
	if !o.ClientOnly {
		info.ServerVersion, serverErr = o.discovery.ServerVersion()
		if serverErr != nil {
			serverErr = fmt.Errorf("cannot get the server version from %s: %w (check --context and --kubeconfig)", o.serverURL(), serverErr)
		}
	}
	switch o.Output {
	case "json":
		b, err := json.MarshalIndent(info, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintln(o.Out, string(b))
	case "yaml":
		b, err := yaml.Marshal(info)
		if err != nil {
			return err
		}
		fmt.Fprint(o.Out, string(b))
	default:
		c := info.ClientVersion
		fmt.Fprintf(o.Out, "Client Version: %s", c.Version)
		if c.GitCommit != "" {
			fmt.Fprintf(o.Out, " (commit %s)", c.GitCommit)
		}
		fmt.Fprintf(o.Out, " %s %s\n", c.GoVersion, c.Platform)
		fmt.Fprintf(o.Out, "Agent Image: %s\n", c.AgentImage)
		if info.ServerVersion != nil {
			fmt.Fprintf(o.Out, "Server Version: %s\n", info.ServerVersion.GitVersion)
		}
	}
	return serverErr
}

func (o *VersionOptions) serverURL() string {
	if o.configFlags == nil {
		return "the cluster"
	}
	cfg, err := o.configFlags.ToRESTConfig()
	if err != nil || cfg.Host == "" {
		return "the cluster"
	}
	return cfg.Host
}
