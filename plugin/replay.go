package plugin

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/yaml"

	"github.com/kubectl-cz/kubectl-cz/intercept/record"
)

type replayOptions struct {
	genericiooptions.IOStreams
	to     string
	output string
}

// NewReplayCommand returns `kubectl cz replay`.
func NewReplayCommand(streams genericiooptions.IOStreams) *cobra.Command {
	o := &replayOptions{IOStreams: streams}
	cmd := &cobra.Command{
		Use:   "replay FILE --to HOST:PORT [-o text|json|yaml]",
		Short: "Send recorded requests again to a local build and show where its answers differ",
		Long: `Send every request of a recording (kubectl cz intercept --record FILE) to HOST:PORT, in order,
and compare each answer with the recorded one: the status, and the body field by field where
both are JSON (a.b[2].c: "old" -> "new"), else byte for byte. Headers recorded as REDACTED
are not sent. It exits with 1 when an answer differs, like diff.`,
		Example: `  # Record core's requests with your header, then try a new build on them
  kubectl cz intercept service core --local-port 3000 --record core.jsonl
  kubectl cz replay core.jsonl --to 127.0.0.1:3001`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if _, _, err := net.SplitHostPort(o.to); err != nil {
				return usageError(c, "--to %q: want HOST:PORT", o.to)
			}
			switch o.output {
			case "", "text", "json", "yaml":
			default:
				return usageError(c, "--output must be text, json or yaml, not %q", o.output)
			}
			return o.run(c, args[0])
		},
	}
	cmd.Flags().StringVar(&o.to, "to", "", "Where the build to try listens (HOST:PORT)")
	cmd.Flags().StringVarP(&o.output, "output", "o", "", "Output format: text, json or yaml")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}

func (o *replayOptions) run(c *cobra.Command, file string) error {
	results, err := record.Replay(c.Context(), file, "http://"+o.to)
	if err != nil {
		return err
	}
	differ := 0
	for _, r := range results {
		if len(r.Diffs) > 0 || r.Error != "" {
			differ++
		}
	}
	switch o.output {
	case "json", "yaml":
		b, err := json.MarshalIndent(results, "", "  ")
		if err != nil {
			return err
		}
		if o.output == "yaml" {
			if b, err = yaml.JSONToYAML(b); err != nil {
				return err
			}
		}
		fmt.Fprintln(o.Out, strings.TrimSpace(string(b)))
	default:
		for i, r := range results {
			switch {
			case r.Error != "":
				fmt.Fprintf(o.Out, "%d %s: %s\n", i+1, r.Request, r.Error)
			case len(r.Diffs) == 0:
				fmt.Fprintf(o.Out, "%d %s: the same answer (%d)\n", i+1, r.Request, r.Status[1])
			default:
				fmt.Fprintf(o.Out, "%d %s: differs\n", i+1, r.Request)
				for _, d := range r.Diffs {
					fmt.Fprintf(o.Out, "    %s\n", d)
				}
			}
		}
	}
	if differ > 0 {
		return fmt.Errorf("%d of %d answers differ from the recording", differ, len(results))
	}
	fmt.Fprintf(o.ErrOut, "%d requests replayed: every answer as recorded\n", len(results))
	return nil
}
