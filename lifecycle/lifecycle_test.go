package lifecycle

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kubectl-cz/kubectl-cz/session"
)

type log struct {
	mu    sync.Mutex
	lines []string
}

func (l *log) add(s string) { l.mu.Lock(); l.lines = append(l.lines, s); l.mu.Unlock() }
func (l *log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, " ")
}

// part logs its start and stop; fail makes it fail before it is active.
func part(l *log, name string, fail error) Part {
	return Func(name, func(ctx context.Context, s *session.Session, active func()) error {
		l.add("start " + name)
		if fail != nil {
			return fail
		}
		active()
		<-ctx.Done()
		l.add("stop " + name)
		return nil
	})
}

func config(t *testing.T) Config {
	dir := t.TempDir()
	return Config{StateDir: dir, Heartbeat: time.Hour, Out: io.Discard, ErrOut: io.Discard,
		Open: func(context.Context) (*session.Session, error) { return session.Open(session.Config{StateDir: dir}) }}
}

// Parts start in order, each once the one before is active, and stop in
// reverse order when the environment ends.
func TestPartsStartInOrderAndStopInReverse(t *testing.T) {
	var l log
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, config(t), part(&l, "a", nil), part(&l, "b", nil), part(&l, "c", nil)) }()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(l.String(), "start c") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := l.String(); got != "start a start b start c stop c stop b stop a" {
		t.Fatalf("order: %s", got)
	}
}

// A part that fails before it is active stops the ones started before it,
// in reverse, starts none after it, and its error names it.
func TestFailureStopsTheOthers(t *testing.T) {
	var l log
	err := Run(context.Background(), config(t), part(&l, "a", nil), part(&l, "b", nil), part(&l, "c", errors.New("no such service")), part(&l, "d", nil))
	if err == nil || err.Error() != "c: no such service" {
		t.Fatalf("err = %v", err)
	}
	if got := l.String(); got != "start a start b start c stop b stop a" {
		t.Fatalf("order: %s", got)
	}
}

// An environment of one part speaks in that part's own words.
func TestOnePartKeepsItsError(t *testing.T) {
	var l log
	if err := Run(context.Background(), config(t), part(&l, "a", errors.New("service \"x\" not found"))); err == nil || err.Error() != "service \"x\" not found" {
		t.Fatalf("err = %v", err)
	}
}

// preparing fails in Prepare; nothing may start then.
type preparing struct {
	Part
	err error
}

func (p preparing) Prepare(context.Context) error { return p.err }

// A part whose input is wrong fails the environment before any session is
// opened or any part started, and the error names it.
func TestPrepareFailsBeforeAnythingChanges(t *testing.T) {
	var l log
	cfg := config(t)
	opened := false
	open := cfg.Open
	cfg.Open = func(ctx context.Context) (*session.Session, error) { opened = true; return open(ctx) }
	err := Run(context.Background(), cfg, part(&l, "a", nil), preparing{part(&l, "b", nil), errors.New("no pod to mount")})
	if err == nil || err.Error() != "b: no pod to mount" {
		t.Fatalf("err = %v", err)
	}
	if opened || l.String() != "" {
		t.Fatalf("something started: opened=%v, %q", opened, l.String())
	}
}

// closing is a Closer that logs its close.
type closing struct {
	Part
	l *log
}

func (c closing) Close(_ context.Context, _ *session.Session, runErr error) error {
	c.l.add("close " + c.Name())
	return nil
}

// In an environment that mixes Closer parts (an intercept) and others, the
// Closers close themselves newest first, and each part's progress shows.
func TestClosersCloseThemselvesAmongOthers(t *testing.T) {
	var l log
	var progress strings.Builder
	cfg := config(t)
	cfg.Progress = &progress
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, cfg, part(&l, "a", nil), closing{part(&l, "b", nil), &l}, part(&l, "c", nil), closing{part(&l, "d", nil), &l})
	}()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(l.String(), "start d") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := l.String(); got != "start a start b start c start d stop d stop c stop b stop a close d close b" {
		t.Fatalf("order: %s", got)
	}
	for _, want := range []string{"[3/4] c: pending", "[1/4] a: starting", "[4/4] d: active after", "[2/4] b: stopping"} {
		if !strings.Contains(progress.String(), want) {
			t.Errorf("progress lacks %q:\n%s", want, progress.String())
		}
	}
}

// Func makes a test Part of a name and a run function.
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

// A part's own states (waiting on a pod) go on its progress line in an
// environment of several parts, and nowhere without one.
func TestSayPutsAStateOnThePartsLine(t *testing.T) {
	var out strings.Builder
	var mu sync.Mutex
	cfg := config(t)
	cfg.Progress = writerFunc(func(b []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return out.Write(b) })
	said := false
	waits := Func("waits", func(ctx context.Context, s *session.Session, active func()) error {
		said = Say(ctx, "waiting on pod p: ContainerCreating")
		return errors.New("gave up")
	})
	_ = Run(context.Background(), cfg, Func("first", func(ctx context.Context, s *session.Session, active func()) error { active(); <-ctx.Done(); return nil }), waits)
	mu.Lock()
	defer mu.Unlock()
	if !said || !strings.Contains(out.String(), "[2/2] waits: waiting on pod p: ContainerCreating") {
		t.Errorf("said %v:\n%s", said, out.String())
	}
	if Say(context.Background(), "x") {
		t.Error("Say without a progress line reported it did")
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }
