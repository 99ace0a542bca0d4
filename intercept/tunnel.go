// Package intercept is the laptop half of `kubectl cz intercept`: it sets up
// the interceptor (decoy Service, agent Deployment, Service patch) through
// the session journal, and holds the tunnel over which the agent sends the
// developer's traffic to a local port.
package intercept

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/kubectl-cz/kubectl-cz/agent/wire"
	"github.com/kubectl-cz/kubectl-cz/intercept/record"
	"github.com/kubectl-cz/kubectl-cz/relay"
)

// Tunnel is one registration with an agent, over one connection.
type Tunnel struct {
	sess    *yamux.Session
	control *yamux.Stream
	dec     *json.Decoder
	local   string
	token   string
	secret  string // the agent's connection secret, for spare streams
	// Mirrored and Dropped are a mirror's copies, as the agent counted
	// them at Leave.
	Mirrored, Dropped int64
	// rec, if set, records the requests and the local answers (a mirror's:
	// the cluster's, which its copies carry).
	rec    *record.Recorder
	mirror bool
	// dial reaches the local address (nil: this machine's network).
	dial func(ctx context.Context, addr string) (net.Conn, error)

	mu     sync.Mutex
	spares int // connections that came through a spare stream
}

// Register speaks Hello over conn (a port-forward stream to the agent's
// control port) and returns the tunnel once the agent accepted the rule.
func Register(conn net.Conn, hello wire.Hello, localAddr string) (*Tunnel, error) {
	sess, err := yamux.Client(conn, wire.YamuxConfig())
	if err != nil {
		conn.Close()
		return nil, err
	}
	st, err := sess.OpenStream()
	if err != nil {
		sess.Close()
		return nil, fmt.Errorf("open the control stream: %w", err)
	}
	if err := json.NewEncoder(st).Encode(hello); err != nil {
		sess.Close()
		return nil, fmt.Errorf("send the intercept rule: %w", err)
	}
	dec := json.NewDecoder(st)
	var reply wire.Reply
	if err := dec.Decode(&reply); err != nil {
		sess.Close()
		return nil, fmt.Errorf("the interceptor did not answer: %w", err)
	}
	if reply.Error != "" {
		sess.Close()
		return nil, fmt.Errorf("the interceptor refused: %s", reply.Error)
	}
	t := &Tunnel{sess: sess, control: st, dec: dec, local: localAddr, token: reply.Token}
	if (hello.Match.Extended() || hello.Mirror) && !reply.Rules {
		// An older agent would take the header alone into account.
		_, _ = t.Leave()
		return nil, fmt.Errorf("the interceptor is older than this kubectl cz and matches headers only and mirrors nothing, not %s: it is replaced once every developer has left the Service", hello.Match)
	}
	return t, nil
}

// KeepSpares keeps n idle connections, opened by dial (port-forward streams
// to the agent's control port), waiting for the agent to use them, and
// replaces each one used, until ctx ends or the tunnel closes.
func (t *Tunnel) KeepSpares(ctx context.Context, n int, dial func(context.Context) (net.Conn, error)) {
	if t.token == "" {
		return // an agent without spare connections
	}
	for i := 0; i < n; i++ {
		go t.spare(ctx, dial)
	}
}

func (t *Tunnel) spare(ctx context.Context, dial func(context.Context) (net.Conn, error)) {
	for ctx.Err() == nil && !t.sess.IsClosed() {
		c, err := dial(ctx)
		if err != nil {
			select {
			case <-ctx.Done():
			case <-t.sess.CloseChan():
			case <-time.After(time.Second):
			}
			continue
		}
		if _, err := c.Write(append([]byte{wire.PoolMagic}, t.token+"\n"...)); err != nil {
			c.Close()
			continue
		}
		// Wait for the agent to use it; close it when the tunnel goes.
		used := make(chan error, 1)
		go func() {
			b := make([]byte, 1)
			_, err := io.ReadFull(c, b)
			if err == nil && b[0] != wire.PoolGo {
				err = errors.New("unexpected byte")
			}
			used <- err
		}()
		select {
		case err := <-used:
			if err != nil {
				c.Close()
				continue
			}
			t.mu.Lock()
			t.spares++
			t.mu.Unlock()
			go t.serveStream(ctx, c)
		case <-ctx.Done():
			c.Close()
		case <-t.sess.CloseChan():
			c.Close()
		}
	}
}

// Serve answers the agent's streams by dialing the local address, until the
// tunnel closes; it returns nil after Leave or Close, an error if the
// tunnel broke.
func (t *Tunnel) Serve(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		t.sess.Close()
	}()
	for {
		st, err := t.sess.AcceptStream()
		if err != nil {
			if t.sess.IsClosed() && ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("tunnel closed: %w", err)
		}
		go t.serveStream(ctx, st)
	}
}

// Done is closed when the tunnel ends.
func (t *Tunnel) Done() <-chan struct{} { return t.sess.CloseChan() }

// SparesUsed counts the connections that used a spare stream rather than
// the yamux tunnel.
func (t *Tunnel) SparesUsed() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.spares
}

func (t *Tunnel) serveStream(ctx context.Context, st net.Conn) {
	local, err := DialLocal(ctx, t.dial, t.local)
	if err != nil {
		_, _ = st.Write(append([]byte{wire.StreamFailed}, fmt.Sprintf("nothing answers on %s (%v)\n", t.local, err)...))
		st.Close()
		return
	}
	if _, err := st.Write([]byte{wire.StreamOK}); err != nil {
		local.Close()
		st.Close()
		return
	}
	switch {
	case t.rec != nil && t.mirror:
		t.rec.ServeMirror(st, local)
		return
	case t.rec != nil:
		st, local = t.rec.Conns(st, local)
	}
	relay.Pipe(local, st)
}

// DialLocal reaches addr with dial, or through this machine's network
// when dial is nil (kubectl cz run's command listens in a network of its
// own).
func DialLocal(ctx context.Context, dial func(context.Context, string) (net.Conn, error), addr string) (net.Conn, error) {
	if dial != nil {
		return dial(ctx, addr)
	}
	d := net.Dialer{Timeout: time.Second}
	return d.DialContext(ctx, "tcp", addr)
}

// Leave unregisters from the agent and says how many developers remain.
func (t *Tunnel) Leave() (int, error) {
	defer t.sess.Close()
	// yamux can report the write failed when the agent read it, answered
	// and hung up before the write was confirmed here: an answer that
	// arrived still counts.
	werr := json.NewEncoder(t.control).Encode(wire.Leave{Leave: true})
	var reply wire.Reply
	if err := t.dec.Decode(&reply); err != nil {
		if werr != nil {
			return 0, fmt.Errorf("say goodbye to the interceptor: %w", werr)
		}
		return 0, fmt.Errorf("the interceptor did not confirm: %w", err)
	}
	t.Mirrored, t.Dropped = reply.Mirrored, reply.Dropped
	return reply.Remaining, nil
}

// Close drops the tunnel without a goodbye.
func (t *Tunnel) Close() error { return t.sess.Close() }
