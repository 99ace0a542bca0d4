// Package files is the in-cluster half of `kubectl cz mount`: an SFTP
// server (github.com/pkg/sftp) in an ephemeral container of the target pod,
// which has the target container's volume mounts at the same paths. The
// laptop reaches it only through port-forward: it listens on the pod's
// loopback, and every connection must present the mount's secret.
package files

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/pkg/sftp"

	"github.com/kubectl-cz/kubectl-cz/agent/wire"
)

// Port is where the file server listens in the pod.
const Port = 7071

// MaxPacket is the data size of one read or write, for both ends: every
// request crosses port-forward, so few big ones beat many of SFTP's
// customary 32 KiB (pkg/sftp accepts messages up to 256 KiB).
const MaxPacket = 128 << 10

// Server serves SFTP on every connection until ctx ends, or until it has
// had no connection for IdleExit (the laptop is gone; an ephemeral
// container cannot be removed, so it ends itself).
type Server struct {
	Log      *slog.Logger
	IdleExit time.Duration
	// Secret is what every connection must present first (package wire).
	Secret string
	// Ready, if set, is closed once it listens.
	Ready chan struct{}
}

func (s *Server) Run(ctx context.Context, addr string) error {
	if s.Log == nil {
		s.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if !wire.ValidSecret(s.Secret) {
		return fmt.Errorf("no valid secret in $%s: the file server refuses to run without one", wire.SecretEnv)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { <-ctx.Done(); l.Close() }()

	var mu sync.Mutex
	active := 0
	idleSince := time.Now()
	if s.IdleExit > 0 {
		go func() {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					mu.Lock()
					idle := active == 0 && time.Since(idleSince) > s.IdleExit
					mu.Unlock()
					if idle {
						s.Log.Info("no laptop connected: exiting", "idle", s.IdleExit)
						cancel()
						return
					}
				}
			}
		}()
	}
	if s.Ready != nil {
		close(s.Ready)
	}
	s.Log.Info("file server ready", "addr", addr)
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go func() {
			// Only a laptop with the secret counts as one: a stranger
			// reconnecting must not keep an idle file server alive.
			if err := wire.Check(c, s.Secret, 10*time.Second); err != nil {
				s.Log.Warn("refused a connection", "err", err)
				return
			}
			mu.Lock()
			active++
			mu.Unlock()
			defer func() {
				mu.Lock()
				active--
				idleSince = time.Now()
				mu.Unlock()
			}()
			// A watch stream, a tree, a read, a write stream, or SFTP.
			br := bufio.NewReaderSize(c, 64<<10)
			first, err := br.Peek(1)
			switch {
			case err == nil && first[0] == WatchMagic:
				_, _ = br.ReadByte()
				if err := serveWatch(c, br); err != nil {
					s.Log.Warn("watch ended", "err", err)
				}
				return
			case err == nil && first[0] == wire.ReadMagic:
				_, _ = br.ReadByte()
				if z, err := ServeRead(br, c); err != nil {
					s.Log.Warn("read stream ended", "err", err)
				} else if z.Bytes > 0 {
					s.Log.Info("read stream compressed", "bytes", z.Bytes, "sent", z.Sent)
				}
				c.Close()
				return
			case err == nil && first[0] == wire.WriteMagic:
				_, _ = br.ReadByte()
				if n, err := ServeWrite(br, c); err != nil {
					s.Log.Warn("write stream ended", "written", n, "err", err)
				} else {
					s.Log.Info("write stream closed", "written", n)
				}
				c.Close()
				return
			case err == nil && first[0] == wire.TreeMagic:
				_, _ = br.ReadByte()
				t0 := time.Now()
				if err := ServeTree(br, c); err != nil {
					s.Log.Warn("tree ended", "err", err)
				} else {
					s.Log.Info("tree sent", "took", time.Since(t0))
				}
				c.Close()
				return
			}
			srv, err := sftp.NewServer(withFsync(bufferedConn{c, br}), sftp.WithMaxTxPacket(MaxPacket), sftp.WithAllocator())
			if err != nil {
				c.Close()
				return
			}
			if err := srv.Serve(); err != nil && !errors.Is(err, io.EOF) {
				s.Log.Warn("sftp session ended", "err", err)
			}
			srv.Close()
		}()
	}
}

// bufferedConn is a connection whose first bytes were peeked.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }
