// Package lifecycle runs the parts of an environment (a teleport, an
// intercept, a mount) in one session, the same way for every primitive:
// crash recovery first, a heartbeat while they run, the parts started in
// order (each once the one before is active), stopped in reverse order on
// Ctrl-C, SIGTERM or a failure, and the session's entries undone last. It
// knows no primitive: each is a Part.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-cz/kubectl-cz/session"
)

// Part is one primitive of an environment.
type Part interface {
	// Name says what the part is, for progress and errors.
	Name() string
	// Run makes the part's changes through s (each journaled before it is
	// made), calls active once they are in place, and holds them until ctx
	// ends. An error before active fails the environment.
	Run(ctx context.Context, s *session.Session, active func()) error
}

// Preparer is a Part that reads what it needs and checks its input before
// anything changes (a workload that has no pod, a port the Service lacks).
type Preparer interface {
	Prepare(ctx context.Context) error
}

// Needer is a Part that needs rights in the cluster, checked for every part
// before anything changes.
type Needer interface {
	Needs() []Right
}

// Admitter is a Part that can ask the API server to admit its changes
// without keeping them (server-side dry run), for --dry-run.
type Admitter interface {
	Admit(ctx context.Context) error
}

// Planner is a Part that can say, for --dry-run, what it would change.
type Planner interface {
	Plan() []string
}

// Closer is a Part that closes its session itself (an intercept shares its
// session with other developers and undoes it only when it leaves last).
// When every part of an environment is a Closer, the runner leaves the
// close to them; they are called in reverse order.
type Closer interface {
	// runErr is the environment's error, if any (a Closer tells its own
	// failure from another part's).
	Close(ctx context.Context, s *session.Session, runErr error) error
}

// Config is what the runner needs besides the parts.
type Config struct {
	Clients  session.Clients
	StateDir string
	// Open opens (or joins) the session, once crash recovery is done.
	Open func(ctx context.Context) (*session.Session, error)
	// Heartbeat is how often the session's journals are stamped.
	Heartbeat time.Duration
	// Out gets progress; ErrOut warnings.
	Out, ErrOut io.Writer
	// Opened, if set, is told the session's ID once it is open.
	Opened func(s *session.Session)
	// Progress, if set, gets one line per part as it changes state
	// (starting, active, stopping, error); an environment of several parts
	// sets it.
	Progress io.Writer
	// Active, if set, is called once every part is active.
	Active func()
	// NoSignals: the caller handles SIGINT and SIGTERM (kubectl cz run
	// passes them to its command, whose end ends the environment).
	NoSignals bool
}

// Prepare prepares every part and checks every right they need, so a
// mistake anywhere is found before anything changes.
func Prepare(ctx context.Context, kube kubernetes.Interface, parts []Part) error {
	for _, p := range parts {
		if pr, ok := p.(Preparer); ok {
			if err := pr.Prepare(ctx); err != nil {
				if len(parts) == 1 {
					return err
				}
				return fmt.Errorf("%s: %w", p.Name(), err)
			}
		}
	}
	return Require(ctx, kube, needs(parts)...)
}

func needs(parts []Part) []Right {
	var all []Right
	for _, p := range parts {
		if n, ok := p.(Needer); ok {
			all = append(all, n.Needs()...)
		}
	}
	return all
}

// Run runs parts in one session until ctx ends or a signal comes, then
// undoes them. It returns the first part's error, joined with an undo's.
// Parts are prepared and their rights checked first (Prepare).
func Run(ctx context.Context, cfg Config, parts ...Part) error {
	if !cfg.NoSignals {
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
	}
	// A crashed kubectl cz's leftovers first: a dead mount on the folder
	// a part checks, an address a teleport would take.
	Recover(ctx, cfg.Clients, cfg.StateDir, cfg.ErrOut)
	if err := Prepare(ctx, cfg.Clients.Kube, parts); err != nil {
		return err
	}
	s, err := cfg.Open(ctx)
	if err != nil {
		return err
	}
	if cfg.Opened != nil {
		cfg.Opened(s)
	}

	var beat sync.WaitGroup
	beatCtx, stopBeat := context.WithCancel(context.WithoutCancel(ctx))
	beat.Add(1)
	go func() {
		defer beat.Done()
		s.KeepAlive(beatCtx, cfg.Heartbeat, func(err error) { fmt.Fprintln(cfg.ErrOut, "warning: heartbeat:", err) })
	}()

	runErr := runParts(ctx, s, parts, cfg.Progress, cfg.Active)
	// No heartbeat may write to a journal being closed.
	stopBeat()
	beat.Wait()
	return closeParts(s, parts, runErr, cfg.Out)
}

// running is a started part.
type running struct {
	part   Part
	cancel context.CancelFunc
	done   chan error
}

// runParts starts each part once the one before is active, waits for ctx
// or a part's failure, then stops them newest first.
func runParts(ctx context.Context, s *session.Session, parts []Part, progress io.Writer, allActive func()) error {
	name := func(p Part, err error) error {
		if len(parts) == 1 {
			return err // an environment of one part: its own words
		}
		return fmt.Errorf("%s: %w", p.Name(), err)
	}
	var sayMu sync.Mutex
	say := func(i int, format string, args ...any) {
		sayMu.Lock()
		defer sayMu.Unlock()
		if progress != nil {
			fmt.Fprintf(progress, "[%d/%d] %s: %s\n", i+1, len(parts), parts[i].Name(), fmt.Sprintf(format, args...))
		}
	}
	var started []running
	var runErr error
	ended := make(chan error, len(parts))
	if len(parts) > 1 {
		for i := range parts {
			say(i, "pending")
		}
	}
	for i, p := range parts {
		// Not derived from ctx: a signal must stop the parts one by one,
		// newest first, not all at once.
		pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		if progress != nil {
			pctx = context.WithValue(pctx, sayKey{}, func(state string) { say(i, "%s", state) })
		}
		r := running{part: p, cancel: cancel, done: make(chan error, 1)}
		active := make(chan struct{})
		var once sync.Once
		start := time.Now()
		say(i, "starting")
		go func() {
			err := p.Run(pctx, s, func() {
				once.Do(func() {
					say(i, "active after %.1fs", time.Since(start).Seconds())
					close(active)
				})
			})
			if err != nil && !errors.Is(err, context.Canceled) {
				say(i, "error: %v", err)
			}
			r.done <- err
			if pctx.Err() == nil { // it ended by itself: the environment ends
				if err == nil {
					err = errors.New("ended")
				}
				ended <- name(p, err)
			}
		}()
		started = append(started, r)
		select {
		case <-active:
			continue
		case runErr = <-ended:
		case <-ctx.Done():
		}
		break
	}
	if runErr == nil && ctx.Err() == nil {
		if allActive != nil {
			allActive()
		}
		select {
		case <-ctx.Done():
		case runErr = <-ended:
		}
	}
	for i := len(started) - 1; i >= 0; i-- {
		if len(parts) > 1 {
			say(i, "stopping")
		}
		started[i].cancel()
		if err := <-started[i].done; err != nil && runErr == nil && !errors.Is(err, context.Canceled) {
			runErr = name(started[i].part, err)
		}
	}
	return runErr
}

// closeParts lets Closer parts close themselves (newest first), then
// undoes what this process recorded in the session when any part is not a
// Closer, reporting both a part's error and a failed undo.
func closeParts(s *session.Session, parts []Part, runErr error, out io.Writer) error {
	ctx := context.Background()
	var errs []error
	own := false
	for i := len(parts) - 1; i >= 0; i-- {
		c, ok := parts[i].(Closer)
		if !ok {
			own = true
			continue
		}
		if err := c.Close(ctx, s, runErr); err != nil {
			errs = append(errs, err)
		}
	}
	if !own {
		if len(parts) > 1 && runErr != nil {
			errs = append([]error{runErr}, errs...)
		}
		return errors.Join(errs...)
	}
	res, err := s.Close(ctx, session.CloseOptions{Log: Indent(out)})
	if err == nil && len(parts) > 1 {
		fmt.Fprintf(out, "session %s closed: %d alterations undone\n", s.ID(), res.Undone)
	}
	if err != nil {
		if runErr != nil {
			err = fmt.Errorf("%w; undoing failed too: %v (run kubectl cz session close %s)", runErr, err, s.ID())
		} else {
			err = fmt.Errorf("undo: %w (run kubectl cz session close %s)", err, s.ID())
		}
		return errors.Join(append([]error{err}, errs...)...)
	}
	return errors.Join(append([]error{runErr}, errs...)...)
}

type sayKey struct{}

// Say puts a part's state on its progress line ("waiting on pod X:
// ContainerCreating"), in an environment of several parts; it reports
// whether it did, so a part that did not get a line says it its own way.
func Say(ctx context.Context, state string) bool {
	if f, ok := ctx.Value(sayKey{}).(func(string)); ok {
		f(state)
		return true
	}
	return false
}

// Recover undoes the laptop-side changes that a crashed kubectl cz left on
// this machine, before a command starts new ones or lists them.
func Recover(ctx context.Context, c session.Clients, stateDir string, errOut io.Writer) {
	results, err := session.RecoverLocal(ctx, c, stateDir, session.CloseOptions{Log: Indent(errOut)})
	for _, r := range results {
		fmt.Fprintf(errOut, "recovered session %s: %d laptop-side alterations of a crashed kubectl cz undone\n", r.ID, r.Undone)
	}
	if err != nil {
		fmt.Fprintf(errOut, "warning: could not undo laptop-side alterations of a crashed session: %v\n", err)
	}
}

// Indent writes what an undo reports under its session's line.
func Indent(w io.Writer) io.Writer { return session.Indent(w) }
