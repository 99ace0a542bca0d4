package intercept

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kubectl-cz/kubectl-cz/agent/wire"
	"github.com/kubectl-cz/kubectl-cz/intercept/record"
	"github.com/kubectl-cz/kubectl-cz/lifecycle"
	"github.com/kubectl-cz/kubectl-cz/session"
)

// KindMember records, in an environment's session, that it takes part in
// a Service's shared intercept session. Its undo (a close of the
// environment after a crash, from any machine) removes the interceptor
// only when the agent says no developer uses it any more.
const KindMember = "intercept.member"

// memberGrace is how long a close waits for the interceptor's count of
// developers to fall to zero.
const memberGrace = 10 * time.Second

type memberData struct {
	Service string `json:"service"`
	Session string `json:"session"`
}

func init() {
	session.RegisterKind(session.Kind{Name: KindMember, Check: func(e session.Entry) error {
		var d memberData
		if err := json.Unmarshal(e.Data, &d); err != nil || d.Service == "" {
			return fmt.Errorf("an intercept member entry without a service")
		}
		// Only ever the Service's own shared session: a forged entry
		// cannot make a close reach any other session.
		if d.Session != SessionID(e.Namespace, d.Service) {
			return fmt.Errorf("an intercept member entry naming session %q, not service %s's", d.Session, d.Service)
		}
		return nil
	}, Undo: undoMember, Describe: func(e session.Entry) session.Alteration {
		var d memberData
		_ = json.Unmarshal(e.Data, &d)
		return session.Alteration{Text: fmt.Sprintf("takes part in the intercept of service %s (session %s)", d.Service, d.Session), Service: d.Service, Role: "member", Joins: d.Session}
	}})
	session.RegisterKind(session.Kind{Name: KindRule, Check: func(e session.Entry) error {
		var d ruleData
		if err := json.Unmarshal(e.Data, &d); err != nil || d.Service == "" || d.Developer == "" {
			return fmt.Errorf("an intercept rule entry without a service or a developer")
		}
		return nil
	}, Undo: func(context.Context, *session.UndoContext, session.Entry) error { return nil },
		Describe: func(e session.Entry) session.Alteration {
			var d ruleData
			_ = json.Unmarshal(e.Data, &d)
			return session.Alteration{Text: fmt.Sprintf("%s takes %s of service %s port %s to %s", d.Developer, d.What, d.Service, d.Port, d.Local), Service: d.Service, Role: "developer",
				Short: fmt.Sprintf("%s\n%s\n-> %s", d.Developer, d.What, d.Local)}
		}})
}

// KindRule records, in the shared session, one developer's rule while they
// are on the interceptor, for session show and graph (what the agent does
// is the agent's; this entry changes nothing and its undo does nothing).
const KindRule = "intercept.rule"

type ruleData struct {
	Service   string `json:"service"`
	Port      string `json:"port"`
	Developer string `json:"developer"`
	What      string `json:"what"`
	Local     string `json:"local"`
}

func undoMember(ctx context.Context, u *session.UndoContext, e session.Entry) error {
	var d memberData
	if err := json.Unmarshal(e.Data, &d); err != nil {
		return err
	}
	loaded, err := session.Load(ctx, u.Clients, d.Session, []string{e.Namespace}, "")
	if err != nil || loaded == nil {
		return err // nil, nil: the interceptor is gone already
	}
	// A crashed developer's tunnel takes the agent about a second to
	// notice: wait a little for the count to fall before calling the
	// developers that remain others.
	var n int
	if perr := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, memberGrace, true, func(ctx context.Context) (bool, error) {
		n, err = Developers(ctx, u.Rest, u.Kube, e.Namespace, d.Service)
		return err != nil || n == 0, nil
	}); perr != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil && !u.Force {
		return fmt.Errorf("%w: if nobody else intercepts service %s, run kubectl cz session close %s", err, d.Service, d.Session)
	}
	if err == nil && n > 0 {
		fmt.Fprintf(u.Log, "%d developer(s) still intercept service %s: its interceptor stays (session %s)\n", n, d.Service, d.Session)
		return nil
	}
	fmt.Fprintf(u.Log, "nobody intercepts service %s any more: closing session %s\n", d.Service, d.Session)
	_, err = loaded.Close(ctx, session.CloseOptions{Force: u.Force, Log: lifecycle.Indent(u.Log)})
	return err
}

// Part is one developer's intercept of a Service, as a part of an
// environment. The interceptor lives in the Service's shared session
// (SessionID), so other developers can join it; whoever leaves last
// restores the Service. When the environment's own session is another one,
// the part joins the shared session and records a KindMember entry in the
// environment's.
type Part struct {
	Clients   session.Clients
	Namespace string
	Service   string
	Port      string // Service port name or number; empty for a one-port Service
	LocalAddr string
	// DialLocal reaches LocalAddr (nil: this machine's network; kubectl cz
	// run's command has a network of its own).
	DialLocal func(ctx context.Context, addr string) (net.Conn, error)
	// LocalStartsLater: the environment starts what listens on LocalAddr
	// after this part, so nothing listening yet is no warning.
	LocalStartsLater bool
	All              bool
	// Mirror: the cluster keeps answering the matching requests; a copy
	// reaches LocalAddr and its answer is dropped.
	Mirror bool
	// Record, if set, is a file the requests that reach LocalAddr are
	// written to with their answers (RecordSecrets: with their
	// Authorization and Cookie headers).
	Record        string
	RecordSecrets bool
	Match         wire.Match
	Agent         AgentSpec
	// Developer names this developer to the agent (user@host).
	Developer string
	// SessionID is the shared session (default SessionID(Namespace, Service)).
	SessionID string
	// OpenShared opens or joins the shared session, when the environment's
	// session is not it; Heartbeat is how often it is stamped.
	OpenShared func(ctx context.Context, id string) (*session.Session, error)
	Heartbeat  time.Duration
	Out        io.Writer
	ErrOut     io.Writer
	// Start is when the command started, for the time to active.
	Start time.Time

	plan      *Plan
	shared    *session.Session // the session the interceptor is recorded in
	beat      sync.WaitGroup
	stopBeat  context.CancelFunc
	installed bool  // this process installed the interceptor
	tunneled  bool  // the tunnel ran (so the agent counted us)
	remaining int   // developers left after our goodbye (-1: unknown)
	runErr    error // this part's own failure
	rule      *session.Entry
	// member is the KindMember entry in the environment's session env: the
	// crash path; a part that leaves in order discards it.
	member *session.Entry
	env    *session.Session
}

func (p *Part) Name() string { return "intercept service " + p.Service }

func (p *Part) id() string {
	if p.SessionID != "" {
		return p.SessionID
	}
	return SessionID(p.Namespace, p.Service)
}

// Needs is every right the intercept and its undo use: a developer who
// joins an interceptor needs them too, since whoever leaves last restores
// the Service.
func (p *Part) Needs() []lifecycle.Right {
	return lifecycle.Rights(primitive, p.Namespace, append(lifecycle.JournalRights,
		[3]string{"create", "", "secrets"}, [3]string{"get", "", "secrets"}, [3]string{"delete", "", "secrets"},
		[3]string{"get", "", "services"}, [3]string{"create", "", "services"}, [3]string{"update", "", "services"}, [3]string{"delete", "", "services"},
		[3]string{"get", "apps", "deployments"}, [3]string{"create", "apps", "deployments"}, [3]string{"delete", "apps", "deployments"},
		[3]string{"list", "", "pods"}, lifecycle.TunnelRight, [3]string{"list", "discovery.k8s.io", "endpointslices"})...)
}

// Prepare reads the Service and picks its port.
func (p *Part) Prepare(ctx context.Context) error {
	if err := (wire.Hello{Port: "-", All: p.All, Match: p.Match, Mirror: p.Mirror}).Validate(); err != nil {
		return err
	}
	if p.Record != "" {
		if st, err := os.Stat(filepath.Dir(p.Record)); err != nil || !st.IsDir() {
			return fmt.Errorf("--record %s: its folder does not exist", p.Record)
		}
		if p.All {
			return fmt.Errorf("--record writes HTTP requests: not with --all, which relays plain TCP")
		}
	}
	plan, err := Prepare(ctx, p.Clients.Kube, Target{Namespace: p.Namespace, Service: p.Service, Port: p.Port})
	if err != nil {
		return err
	}
	p.plan = plan
	return nil
}

// warnIfNothingListens says when the local port has no server yet.
func (p *Part) warnIfNothingListens() {
	if p.LocalStartsLater {
		return
	}
	if c, err := DialLocal(context.Background(), p.DialLocal, p.LocalAddr); err != nil {
		fmt.Fprintf(p.ErrOut, "warning: nothing listens on %s yet: intercepted requests get a 502 until something does\n", p.LocalAddr)
	} else {
		c.Close()
	}
}

// Admit dry-runs the interceptor's objects and the Service's change.
func (p *Part) Admit(ctx context.Context) error { return DryRun(ctx, p.Clients.Kube, p.plan, p.Agent) }

// Plan says what the intercept would change.
func (p *Part) Plan() []string {
	if p.plan.Existing {
		return []string{fmt.Sprintf("join the interceptor of service %s/%s (port %s): %s", p.Namespace, p.Service, p.plan.PortKey, p.what())}
	}
	agent := AgentName(p.Service)
	return []string{
		fmt.Sprintf("create Secret %s/%s (the agent's secret)", p.Namespace, agent),
		fmt.Sprintf("create Deployment %s/%s (the interceptor, image %s)", p.Namespace, agent, p.Agent.Image),
		fmt.Sprintf("create Service %s/%s (the decoy, selecting the original pods)", p.Namespace, p.plan.Decoy),
		fmt.Sprintf("patch Service %s/%s: spec.selector and spec.ports to the interceptor", p.Namespace, p.Service),
		fmt.Sprintf("send %s on port %s to %s", p.what(), p.plan.PortKey, p.LocalAddr),
	}
}

func (p *Part) what() string {
	if p.All {
		return "every connection"
	}
	if p.Mirror {
		return "a copy of the requests with " + p.Match.String()
	}
	return "requests with " + p.Match.String()
}

// Run installs or joins the interceptor and holds the tunnel until ctx ends.
func (p *Part) Run(ctx context.Context, s *session.Session, active func()) error {
	p.runErr = p.run(ctx, s, active)
	return p.runErr
}

func (p *Part) run(ctx context.Context, s *session.Session, active func()) error {
	if p.plan == nil {
		if err := p.Prepare(ctx); err != nil {
			return err
		}
	}
	p.warnIfNothingListens()
	p.shared = s
	if s.ID() != p.id() {
		// Recorded before the shared session changes, so a close of the
		// environment after a crash also visits the interceptor.
		e, err := s.Record(ctx, KindMember, primitive, p.Namespace, memberData{Service: p.Service, Session: p.id()})
		if err != nil {
			return err
		}
		if e, err = s.Applied(ctx, e, nil); err != nil {
			return err
		}
		p.member, p.env = &e, s
		if p.shared, err = p.OpenShared(ctx, p.id()); err != nil {
			return err
		}
		beatCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
		p.stopBeat = stop
		p.beat.Add(1)
		go func() {
			defer p.beat.Done()
			p.shared.KeepAlive(beatCtx, p.Heartbeat, func(err error) { fmt.Fprintln(p.ErrOut, "warning: heartbeat:", err) })
		}()
	}
	if p.plan.Existing {
		fmt.Fprintf(p.Out, "service %s is already intercepted: joining its interceptor\n", p.Service)
		if err := p.shared.Attach(ctx, p.Namespace); err != nil {
			return err
		}
	} else {
		p.installed = true
		if err := Install(ctx, p.shared, p.Clients.Kube, p.Clients.Rest, p.plan, p.Agent, p.Out); err != nil {
			return err
		}
	}
	r := &Runner{
		Config: p.Clients.Rest, Kube: p.Clients.Kube, Namespace: p.Namespace, Service: p.Service, LocalAddr: p.LocalAddr, DialLocal: p.DialLocal, Out: p.Out,
		Hello: wire.Hello{Developer: p.Developer, Port: p.plan.PortKey, All: p.All, Match: p.Match, Mirror: p.Mirror, RecordAnswers: p.Mirror && p.Record != ""},
	}
	if p.Record != "" {
		rec, err := record.Create(p.Record, p.RecordSecrets)
		if err != nil {
			return err
		}
		r.Recorder = rec
		defer func() {
			n, lost, err := rec.Close()
			if err != nil {
				fmt.Fprintf(p.ErrOut, "warning: recording %s: %v\n", p.Record, err)
			}
			fmt.Fprintf(p.Out, "recorded %d requests with their answers in %s (%d connections not recorded whole); kubectl cz replay %s --to HOST:PORT sends them again\n", n, p.Record, lost, p.Record)
		}()
	}
	p.tunneled = true
	remaining, err := r.Run(ctx, func(first bool) {
		if first {
			p.recordRule(ctx)
			fmt.Fprintf(p.Out, "intercept active after %.1fs: %s to service %s port %s now reach %s\n",
				time.Since(p.Start).Seconds(), p.what(), p.Service, p.plan.PortKey, p.LocalAddr)
			active()
		} else {
			fmt.Fprintln(p.Out, "tunnel up again")
		}
	})
	p.remaining = remaining
	return err
}

// recordRule notes this developer's rule in the shared session; it goes
// when the developer leaves.
func (p *Part) recordRule(ctx context.Context) {
	e, err := p.shared.Record(ctx, KindRule, primitive, p.Namespace, ruleData{Service: p.Service, Port: p.plan.PortKey, Developer: p.Developer, What: p.what(), Local: p.LocalAddr})
	if err != nil {
		fmt.Fprintf(p.ErrOut, "warning: cannot note the rule in session %s: %v\n", p.shared.ID(), err)
		return
	}
	if e, err = p.shared.Applied(ctx, e, nil); err == nil {
		p.rule = &e
	}
}

// Close undoes the interceptor after a failure of this part's install, and
// otherwise leaves it to the last developer.
func (p *Part) Close(ctx context.Context, _ *session.Session, _ error) error {
	if p.stopBeat != nil {
		p.stopBeat()
		p.beat.Wait()
	}
	s := p.shared
	if p.rule != nil && p.remaining != 0 {
		// Others stay on the interceptor: this developer's rule goes.
		_ = s.Discard(ctx, *p.rule)
	}
	if p.member != nil && (p.remaining >= 0 || !p.tunneled) {
		// This part settled its share itself: the environment's close has
		// nothing to ask the agent.
		defer func() { _ = p.env.Discard(ctx, *p.member) }()
	}
	switch {
	case s == nil:
		return p.runErr
	case p.installed && (p.runErr != nil || !p.tunneled): // failed or stopped while installing
		if _, err := s.Close(ctx, session.CloseOptions{Log: lifecycle.Indent(p.ErrOut)}); err != nil {
			return fmt.Errorf("%v; undoing the interceptor failed too: %v (run kubectl cz session close %s)", p.runErr, err, s.ID())
		}
		return p.runErr
	case p.runErr != nil:
		return p.runErr
	case !p.tunneled:
		return nil
	case p.remaining > 0:
		fmt.Fprintf(p.Out, "left; %d other developer(s) still intercept service %s, so the interceptor stays\n", p.remaining, p.Service)
		return nil
	case p.remaining < 0:
		fmt.Fprintf(p.Out, "left without reaching the interceptor; if nobody else uses it, run: kubectl cz session close %s\n", s.ID())
		return nil
	}
	fmt.Fprintln(p.Out, "last developer left: restoring service", p.Service)
	// Every entry of the shared session, whoever recorded it.
	loaded, err := session.Load(ctx, p.Clients, s.ID(), []string{p.Namespace}, "")
	if err != nil || loaded == nil {
		return err
	}
	res, err := loaded.Close(ctx, session.CloseOptions{Log: lifecycle.Indent(p.Out)})
	if err != nil {
		return fmt.Errorf("restore service %s: %w (run kubectl cz session close %s)", p.Service, err, s.ID())
	}
	fmt.Fprintf(p.Out, "session %s closed: %d alterations undone\n", s.ID(), res.Undone)
	return nil
}

// PullPolicies are the agent pull policies a user may ask for.
var PullPolicies = []corev1.PullPolicy{corev1.PullIfNotPresent, corev1.PullAlways, corev1.PullNever}
