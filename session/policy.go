package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Policy says when a session may be closed by someone else than the
// process that holds it.
type Policy struct {
	// Force overrides conflicts, liveness and ownership.
	Force bool
	// GC collects an abandoned session, whoever owned it.
	GC bool
	// User is who closes (the cluster's name for them).
	User string
}

// CloseID finds a session in every namespace the user may list journals in
// (else in namespace) and on this machine, checks that the policy lets
// the user close it, and closes it, saying what was undone on out.
func CloseID(ctx context.Context, c Clients, id, namespace, stateDir string, p Policy, out io.Writer) error {
	loaded, err := Find(ctx, c, id, namespace, stateDir)
	if err != nil {
		return err
	}
	if owner := loaded.Meta.Owner; !p.Force && !p.GC && owner.User != p.User {
		return fmt.Errorf("session %s belongs to %s (as its journal says), not to %s: check with them, or pass --force to close it anyway", id, owner, p.User)
	}
	if !p.Force {
		if alive, known := OwnerAlive(loaded.Meta.Owner); known && alive {
			return fmt.Errorf("session %s is held by a running kubectl cz (pid %d on this machine): stop it with Ctrl-C there, or pass --force", id, loaded.Meta.Owner.PID)
		}
	}
	res, err := loaded.Close(ctx, CloseOptions{Force: p.Force, Log: Indent(out)})
	if res != nil && res.Undone > 0 || err == nil {
		fmt.Fprintf(out, "session %s closed: %d alterations undone", id, res.Undone)
		if res.Left > 0 {
			fmt.Fprintf(out, ", %d left", res.Left)
		}
		fmt.Fprintln(out)
	}
	return err
}

// Find loads a session from every namespace the user may list journals in
// (else from namespace alone) and from this machine; a session with no
// trace is an error saying where it was looked for.
func Find(ctx context.Context, c Clients, id, namespace, stateDir string) (*Loaded, error) {
	loaded, err := Load(ctx, c, id, nil, stateDir)
	var forbidden *ForbiddenError
	if errors.As(err, &forbidden) {
		// No cluster-wide list: look in the current namespace only.
		loaded, err = Load(ctx, c, id, []string{namespace}, stateDir)
	}
	if err != nil {
		return nil, err
	}
	if loaded == nil {
		return nil, fmt.Errorf("session %q not found in namespace %s or on this machine (kubectl cz session list -A shows the sessions)", id, namespace)
	}
	return loaded, nil
}

// Abandoned says whether gc may collect a session, and if not why: its
// owner runs on this machine, its journal is corrupt, or its heartbeat is
// more recent than expiry. Silence is the sign, not a dead owner process:
// another terminal may have joined the session and keep its heartbeat going.
func Abandoned(s Summary, now time.Time, expiry time.Duration) (bool, string) {
	if alive, known := OwnerAlive(s.Owner); known && alive {
		return false, "its owner runs here"
	}
	if s.Corrupt != "" {
		return false, fmt.Sprintf("its journal is corrupt (%s)", s.Corrupt)
	}
	if !s.Heartbeat.IsZero() && s.Silence(now) <= expiry {
		return false, "its heartbeat is recent"
	}
	return true, ""
}

// Indent writes what an undo reports under its session's line.
func Indent(w io.Writer) io.Writer { return prefixWriter{w, "  "} }

type prefixWriter struct {
	w      io.Writer
	prefix string
}

func (p prefixWriter) Write(b []byte) (int, error) {
	for _, l := range strings.SplitAfter(string(b), "\n") {
		if l == "" {
			continue
		}
		if _, err := io.WriteString(p.w, p.prefix+l); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}
