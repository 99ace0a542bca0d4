package plugin

import (
	"context"
	"fmt"
	"io"

	"github.com/kubectl-cz/kubectl-cz/session"
)

// recoverCrashed undoes the laptop-side changes that a crashed kubectl cz
// left on this machine, before a command starts new ones or lists them.
func recoverCrashed(ctx context.Context, c session.Clients, errOut io.Writer) {
	results, err := session.RecoverLocal(ctx, c, session.DefaultStateDir(), session.CloseOptions{Log: prefixWriter{errOut, "  "}})
	for _, r := range results {
		fmt.Fprintf(errOut, "recovered session %s: %d laptop-side alterations of a crashed kubectl cz undone\n", r.ID, r.Undone)
	}
	if err != nil {
		fmt.Fprintf(errOut, "warning: could not undo laptop-side alterations of a crashed session: %v\n", err)
	}
}
