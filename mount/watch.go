package mount

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubectl-cz/kubectl-cz/agent/files"
	"github.com/kubectl-cz/kubectl-cz/fusefs"
	"github.com/kubectl-cz/kubectl-cz/pfconn"
)

// Watch keeps the mount told of every change the file server sees in the
// volumes (its inotify stream) until ctx ends: while it is told, the
// kernel keeps names and attributes for fusefs.WatchedTimeout and each
// change is dropped as it happens; when the stream is lost, the mount
// drops everything, goes back to short caches and the stream is opened
// again. A file server too old for it leaves the mount on short caches.
func Watch(ctx context.Context, cfg *rest.Config, kube kubernetes.Interface, ns, pod string, agent Agent, roots []string, m *fusefs.Mounted, log io.Writer) {
	backoff := time.Second
	for attempt := 0; ctx.Err() == nil; attempt++ {
		ready, err := watchOnce(ctx, cfg, kube, ns, pod, agent, roots, m)
		m.Watched(false)
		if ctx.Err() != nil {
			return
		}
		if !ready && attempt == 0 {
			fmt.Fprintf(log, "mount: the file server does not stream changes (%v): caches stay short (1 s)\n", err)
			return
		}
		if ready {
			fmt.Fprintf(log, "mount: the file server's change stream ended (%v); caches are short until it is back\n", err)
			backoff = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

// watchOnce follows one change stream until it ends; ready says whether
// it got as far as watching.
func watchOnce(ctx context.Context, cfg *rest.Config, kube kubernetes.Interface, ns, pod string, agent Agent, roots []string, m *fusefs.Mounted) (ready bool, err error) {
	pf, err := pfconn.Dial(ctx, cfg, kube, ns, pod)
	if err != nil {
		return false, err
	}
	defer pf.Close()
	c, err := pf.DialPort(ctx, agent.Port)
	if err != nil {
		return false, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if err := request(ctx, c, agent.Secret, files.WatchMagic, files.WatchRequest{Roots: roots}); err != nil {
		return false, err
	}
	lines := bufio.NewScanner(c)
	lines.Buffer(make([]byte, 4096), 64<<10)
	for lines.Scan() {
		switch p := lines.Text(); p {
		case ".": // every watch is in place
			ready = true
			m.Watched(true)
		case "*": // changes were lost
			m.InvalidateAll()
		default:
			m.Invalidate(p)
		}
	}
	if err := lines.Err(); err != nil {
		return ready, err
	}
	return ready, io.EOF
}
