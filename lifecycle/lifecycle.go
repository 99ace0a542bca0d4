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
	"strings"
	"sync"
	"syscall"
	"time"

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

// Closer is a Part that closes its session itself (an intercept shares its
// session with other developers and undoes it only when it leaves last).
// When every part of an environment is a Closer, the runner leaves the
// close to them; they are called in reverse order.
type Closer interface {
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
}

// Run runs parts in one session until ctx ends or a signal comes, then
// undoes them. It returns the first part's error, joined with an undo's.
func Run(ctx context.Context, cfg Config, parts ...Part) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	Recover(ctx, cfg.Clients, cfg.StateDir, cfg.ErrOut)
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

	runErr := runParts(ctx, s, parts)
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
func runParts(ctx context.Context, s *session.Session, parts []Part) error {
	name := func(p Part, err error) error {
		if len(parts) == 1 {
			return err // an environment of one part: its own words
		}
		return fmt.Errorf("%s: %w", p.Name(), err)
	}
	var started []running
	var runErr error
	ended := make(chan error, len(parts))
	for _, p := range parts {
		// Not derived from ctx: a signal must stop the parts one by one,
		// newest first, not all at once.
		pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		r := running{part: p, cancel: cancel, done: make(chan error, 1)}
		active := make(chan struct{})
		var once sync.Once
		go func() {
			err := p.Run(pctx, s, func() { once.Do(func() { close(active) }) })
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
		select {
		case <-ctx.Done():
		case runErr = <-ended:
		}
	}
	for i := len(started) - 1; i >= 0; i-- {
		started[i].cancel()
		if err := <-started[i].done; err != nil && runErr == nil && !errors.Is(err, context.Canceled) {
			runErr = name(started[i].part, err)
		}
	}
	return runErr
}

// closeParts undoes what this process recorded in the session (newest
// first), or lets Closer parts do it, reporting both a part's error and a
// failed undo.
func closeParts(s *session.Session, parts []Part, runErr error, out io.Writer) error {
	closers := 0
	for _, p := range parts {
		if _, ok := p.(Closer); ok {
			closers++
		}
	}
	ctx := context.Background()
	if closers == len(parts) && closers > 0 {
		var errs []error
		for i := len(parts) - 1; i >= 0; i-- {
			errs = append(errs, parts[i].(Closer).Close(ctx, s, runErr))
		}
		return errors.Join(errs...)
	}
	if _, err := s.Close(ctx, session.CloseOptions{Log: Indent(out)}); err != nil {
		if runErr != nil {
			return fmt.Errorf("%w; undoing failed too: %v (run kubectl cz session close %s)", runErr, err, s.ID())
		}
		return fmt.Errorf("undo: %w (run kubectl cz session close %s)", err, s.ID())
	}
	return runErr
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

// Func makes a Part of a name and a run function.
func Func(name string, run func(ctx context.Context, s *session.Session, active func()) error) Part {
	return funcPart{name, run}
}

type funcPart struct {
	name string
	run  func(context.Context, *session.Session, func()) error
}

func (p funcPart) Name() string { return p.name }
func (p funcPart) Run(ctx context.Context, s *session.Session, active func()) error {
	return p.run(ctx, s, active)
}
