package intercept

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubectl-cz/kubectl-cz/agent/wire"
	"github.com/kubectl-cz/kubectl-cz/agentsecret"
	"github.com/kubectl-cz/kubectl-cz/intercept/record"
	"github.com/kubectl-cz/kubectl-cz/pfconn"
)

// spareStreams is how many idle port-forward streams a laptop keeps open
// for the agent: one per concurrent new connection it can take at once
// without falling back to the yamux tunnel.
const spareStreams = 4

// Runner holds a developer's tunnel to the interceptor.
type Runner struct {
	Config    *rest.Config
	Kube      kubernetes.Interface
	Namespace string
	Service   string
	Hello     wire.Hello
	LocalAddr string
	// DialLocal reaches LocalAddr (nil: this machine's network).
	DialLocal func(ctx context.Context, addr string) (net.Conn, error)
	// Recorder, if set, records what reaches LocalAddr and its answers.
	Recorder *record.Recorder
	Out      io.Writer
}

// connect finds a ready agent pod, port-forwards to its control port and
// registers the rule.
func (r *Runner) connect(ctx context.Context) (*Tunnel, *pfconn.Conn, error) {
	pod, err := readyAgent(ctx, r.Kube, r.Namespace, r.Service)
	if err != nil {
		return nil, nil, err
	}
	secret, err := agentsecret.Read(ctx, r.Kube, r.Namespace, AgentName(r.Service))
	if err != nil {
		return nil, nil, err
	}
	pf, err := pfconn.Dial(ctx, r.Config, r.Kube, r.Namespace, pod)
	if err != nil {
		return nil, nil, err
	}
	conn, err := dialControl(ctx, pf, secret)
	if err != nil {
		pf.Close()
		return nil, nil, err
	}
	tun, err := Register(conn, r.Hello, r.LocalAddr)
	if err != nil {
		pf.Close()
		return nil, nil, err
	}
	tun.secret, tun.dial, tun.rec, tun.mirror = secret, r.DialLocal, r.Recorder, r.Hello.Mirror
	return tun, pf, nil
}

// AgentName is the interceptor Deployment of a Service, and its Secret's name.
func AgentName(service string) string { return childName("cz-interceptor-", service, 63) }

// dialControl opens a stream to the agent's control port and presents the
// secret on it.
func dialControl(ctx context.Context, pf *pfconn.Conn, secret string) (net.Conn, error) {
	c, err := pf.DialPort(ctx, wire.ControlPort)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := wire.Present(ctx, c, secret); err != nil {
		c.Close()
		return nil, fmt.Errorf("interceptor pod %s/%s: %w", pf.Namespace, pf.Pod, err)
	}
	return c, nil
}

// Reach waits until the agent of a new interceptor answers on its control
// port with the secret of Secret name: the agent listens, on every Service
// port too, and this machine's path to it works.
func Reach(ctx context.Context, cfg *rest.Config, kube kubernetes.Interface, ns, pod, name string, timeout time.Duration) error {
	var last error
	err := pollControl(ctx, cfg, kube, ns, pod, name, timeout, func(c net.Conn, err error) (bool, error) {
		if err == nil {
			return true, nil
		}
		last = err
		if errors.Is(err, wire.ErrRefused) {
			return false, err // a wrong secret does not fix itself
		}
		return false, nil
	})
	if wait.Interrupted(err) {
		return fmt.Errorf("the interceptor in pod %s/%s did not answer within %s: %w", ns, pod, timeout, last)
	}
	return err
}

// WaitRouted waits until the agent's route probe says the Service's own
// address reaches it (kube-proxy switched).
func WaitRouted(ctx context.Context, cfg *rest.Config, kube kubernetes.Interface, ns, pod, name string, timeout time.Duration) error {
	err := pollControl(ctx, cfg, kube, ns, pod, name, timeout, func(c net.Conn, err error) (bool, error) {
		verdict := []byte{0}
		if err != nil {
			return false, nil
		}
		if _, err := c.Write([]byte{wire.ProbeMagic}); err != nil {
			return false, nil
		}
		if _, err := io.ReadFull(c, verdict); err != nil {
			return false, nil
		}
		return verdict[0] == wire.ProbeRouted, nil
	})
	if wait.Interrupted(err) {
		return fmt.Errorf("the Service's own address did not reach interceptor %s/%s within %s (is kube-proxy running on its node?)", ns, pod, timeout)
	}
	return err
}

// Developers asks the interceptor of a Service how many developers it
// serves now.
func Developers(ctx context.Context, cfg *rest.Config, kube kubernetes.Interface, ns, service string) (int, error) {
	pod, err := readyAgent(ctx, kube, ns, service)
	if err != nil {
		return 0, err
	}
	n := -1
	err = pollControl(ctx, cfg, kube, ns, pod, AgentName(service), 15*time.Second, func(c net.Conn, err error) (bool, error) {
		if err != nil {
			return false, nil
		}
		count := []byte{0}
		if _, err := c.Write([]byte{wire.CountMagic}); err != nil {
			return false, nil
		}
		if _, err := io.ReadFull(c, count); err != nil {
			return false, nil
		}
		n = int(count[0])
		return true, nil
	})
	if err != nil {
		return 0, fmt.Errorf("ask interceptor %s/%s how many developers it serves: %w", ns, pod, err)
	}
	return n, nil
}

// readyAgent is a ready pod of a Service's interceptor.
func readyAgent(ctx context.Context, kube kubernetes.Interface, ns, service string) (string, error) {
	pods, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: LabelInterceptor + "=" + service})
	if err != nil {
		return "", fmt.Errorf("cannot list the interceptor's pods: %w", err)
	}
	for i := range pods.Items {
		if pods.Items[i].DeletionTimestamp == nil && podReady(&pods.Items[i]) {
			return pods.Items[i].Name, nil
		}
	}
	return "", fmt.Errorf("no ready interceptor pod for service %s", service)
}

// pollControl opens control connections to the agent of Secret name, over
// one port-forward, every 100 ms until try says done, fails, or timeout
// passes. try gets each connection (closed after it, and when ctx ends) or
// the error of opening it.
func pollControl(ctx context.Context, cfg *rest.Config, kube kubernetes.Interface, ns, pod, name string, timeout time.Duration, try func(net.Conn, error) (bool, error)) error {
	secret, err := agentsecret.Read(ctx, kube, ns, name)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pf, err := pfconn.Dial(ctx, cfg, kube, ns, pod)
	if err != nil {
		return err
	}
	defer pf.Close()
	return wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		c, err := dialControl(ctx, pf, secret)
		if err != nil {
			return try(nil, err)
		}
		defer c.Close()
		stop := context.AfterFunc(ctx, func() { c.Close() })
		defer stop()
		return try(c, nil)
	})
}

// Run holds the tunnel until ctx ends, reconnecting with backoff when it
// drops (a restarted agent pod, a broken port-forward); meanwhile matching
// requests go to the original pods. active is called each time the tunnel
// is up. On the way out it leaves and returns how many developers remain.
// A refusal by the agent (a clashing rule) is returned at once.
func (r *Runner) Run(ctx context.Context, active func(first bool)) (int, error) {
	first := true
	backoff := 500 * time.Millisecond
	for {
		tun, pf, err := r.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return -1, nil
			}
			if first {
				return -1, err
			}
			fmt.Fprintf(r.Out, "tunnel down (%v); retrying in %s\n", err, backoff)
			select {
			case <-ctx.Done():
				return -1, nil
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 500 * time.Millisecond
		active(first)
		first = false
		serveCtx, stop := context.WithCancel(context.Background())
		go func() { _ = tun.Serve(serveCtx) }()
		tun.KeepSpares(serveCtx, spareStreams, func(ctx context.Context) (net.Conn, error) {
			return dialControl(ctx, pf, tun.secret)
		})
		select {
		case <-ctx.Done():
			remaining, err := tun.Leave()
			stop()
			pf.Close()
			if r.Hello.Mirror && err == nil {
				fmt.Fprintf(r.Out, "mirror: %d copies reached %s, %d dropped\n", tun.Mirrored, r.LocalAddr, tun.Dropped)
			}
			if err != nil {
				// Unknown whether others remain: never tear down under them.
				fmt.Fprintf(r.Out, "could not say goodbye to the interceptor: %v\n", err)
				return -1, nil
			}
			return remaining, nil
		case <-tun.Done():
			stop()
			pf.Close()
			fmt.Fprintln(r.Out, "tunnel to the interceptor lost; reconnecting (matching requests go to the original pods meanwhile)")
		case <-pf.Done():
			stop()
			tun.Close()
			fmt.Fprintln(r.Out, "port-forward to the interceptor lost; reconnecting (matching requests go to the original pods meanwhile)")
		}
	}
}
