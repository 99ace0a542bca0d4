package mount

import (
	"bufio"
	"context"
	"encoding/json"
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
	for ctx.Err() == nil {
		err := watchOnce(ctx, cfg, kube, ns, pod, agent, roots, m)
		m.Watched(false)
		if ctx.Err() != nil {
			return
		}
		fmt.Fprintf(log, "mount: the file server's change stream ended (%v); caches are short until it is back\n", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

func watchOnce(ctx context.Context, cfg *rest.Config, kube kubernetes.Interface, ns, pod string, agent Agent, roots []string, m *fusefs.Mounted) error {
	pf, err := pfconn.Dial(ctx, cfg, kube, ns, pod)
	if err != nil {
		return err
	}
	defer pf.Close()
	c, err := pf.DialPort(ctx, agent.Port)
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if err := present(ctx, c, agent.Secret); err != nil {
		return err
	}
	req, _ := json.Marshal(files.WatchRequest{Roots: roots})
	if _, err := c.Write(append(append([]byte{files.WatchMagic}, req...), '\n')); err != nil {
		return err
	}
	lines := bufio.NewScanner(c)
	lines.Buffer(make([]byte, 4096), 64<<10)
	for lines.Scan() {
		switch p := lines.Text(); p {
		case ".": // every watch is in place
			m.Watched(true)
		case "*": // changes were lost
			m.InvalidateAll()
		default:
			m.Invalidate(p)
		}
	}
	if err := lines.Err(); err != nil {
		return err
	}
	return io.EOF
}
