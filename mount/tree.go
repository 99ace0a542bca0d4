package mount

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubectl-cz/kubectl-cz/agent/wire"
	"github.com/kubectl-cz/kubectl-cz/pfconn"
)

// TreeStreams opens the file server's tree streams (package wire), each
// on a connection of its own beside the SFTP session.
func TreeStreams(cfg *rest.Config, kube kubernetes.Interface, ns, pod string, agent Agent) func(context.Context, wire.TreeRequest) (io.ReadCloser, error) {
	return func(ctx context.Context, req wire.TreeRequest) (io.ReadCloser, error) {
		line, err := json.Marshal(req)
		if err != nil {
			return nil, err
		}
		pf, err := pfconn.Dial(ctx, cfg, kube, ns, pod)
		if err != nil {
			return nil, err
		}
		c, err := pf.DialPort(ctx, agent.Port)
		if err != nil {
			pf.Close()
			return nil, err
		}
		s := &stream{Conn: c, pf: pf}
		s.stop = context.AfterFunc(ctx, func() { s.Close() })
		if err := present(ctx, c, agent.Secret); err != nil {
			s.Close()
			return nil, fmt.Errorf("tree stream: %w", err)
		}
		if _, err := c.Write(append(append([]byte{wire.TreeMagic}, line...), '\n')); err != nil {
			s.Close()
			return nil, fmt.Errorf("tree stream: %w", err)
		}
		return s, nil
	}
}

// stream is a tree stream's connection and the port-forward under it.
type stream struct {
	net.Conn
	pf   *pfconn.Conn
	stop func() bool
}

func (s *stream) Close() error {
	if s.stop != nil {
		s.stop()
	}
	err := s.Conn.Close()
	s.pf.Close()
	return err
}
