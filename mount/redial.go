package mount

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/pkg/sftp"

	"github.com/kubectl-cz/kubectl-cz/agent/wire"
	"github.com/kubectl-cz/kubectl-cz/fusefs"
)

// Redialer is a fusefs.Remote that opens a new SFTP session when the one it
// has is lost (the port-forward dropped: an API server restart, a laptop
// asleep) and tries the operation once more. Files open on the lost session
// fail with EIO; programs open them again.
type Redialer struct {
	Dial func() (*sftp.Client, func(), error)
	// Trees, if set, opens the file server's tree streams.
	Trees func(context.Context, wire.TreeRequest) (io.ReadCloser, error)
	// Reads, if set, opens the file server's read streams.
	Reads func(context.Context, wire.ReadRequest) (io.ReadCloser, error)
	// Writes, if set, opens the file server's write streams.
	Writes func(context.Context, wire.WriteRequest) (io.ReadWriteCloser, error)

	mu     sync.Mutex
	client *sftp.Client
	close  func()
	gen    int
}

// NewRedialer dials the first session.
func NewRedialer(dial func() (*sftp.Client, func(), error)) (*Redialer, error) {
	c, closeFn, err := dial()
	if err != nil {
		return nil, err
	}
	return &Redialer{Dial: dial, client: c, close: closeFn}, nil
}

// Tree opens a tree stream (fusefs.TreeRemote).
func (r *Redialer) Tree(ctx context.Context, req wire.TreeRequest) (io.ReadCloser, error) {
	if r.Trees == nil {
		return nil, wire.ErrTreeUnsupported
	}
	return r.Trees(ctx, req)
}

// ReadRange opens a read stream (fusefs.RangeReader).
func (r *Redialer) ReadRange(ctx context.Context, p string, off, n int64) (io.ReadCloser, error) {
	if r.Reads == nil {
		return nil, wire.ErrReadUnsupported
	}
	return r.Reads(ctx, wire.ReadRequest{Path: p, Offset: off, Length: n})
}

// OpenWrites opens a file's write stream (fusefs.StreamWriter).
func (r *Redialer) OpenWrites(ctx context.Context, req wire.WriteRequest) (io.ReadWriteCloser, error) {
	if r.Writes == nil {
		return nil, wire.ErrWriteUnsupported
	}
	return r.Writes(ctx, req)
}

// Close ends the current session.
func (r *Redialer) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.close != nil {
		r.close()
		r.close = nil
	}
}

func (r *Redialer) current() (*sftp.Client, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.client, r.gen
}

// redial replaces the session generation gen, unless another call already
// did.
func (r *Redialer) redial(gen int) (*sftp.Client, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gen != gen {
		return r.client, nil
	}
	c, closeFn, err := r.Dial()
	if err != nil {
		return nil, err
	}
	if r.close != nil {
		r.close()
	}
	r.client, r.close = c, closeFn
	r.gen++
	return c, nil
}

// lost tells a dead session from an answer of the file server.
func lost(err error) bool {
	return errors.Is(err, sftp.ErrSSHFxConnectionLost) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe)
}

func (r *Redialer) do(op func(fusefs.SFTP) error) error {
	c, gen := r.current()
	err := op(fusefs.SFTP{Client: c})
	if err == nil || !lost(err) {
		return err
	}
	c, rerr := r.redial(gen)
	if rerr != nil {
		return err
	}
	return op(fusefs.SFTP{Client: c})
}

func (r *Redialer) Lstat(p string) (fi os.FileInfo, err error) {
	err = r.do(func(s fusefs.SFTP) (e error) { fi, e = s.Lstat(p); return })
	return
}

func (r *Redialer) ReadDir(p string) (list []os.FileInfo, err error) {
	err = r.do(func(s fusefs.SFTP) (e error) { list, e = s.ReadDir(p); return })
	return
}

func (r *Redialer) OpenFile(p string, flags int) (f fusefs.File, err error) {
	err = r.do(func(s fusefs.SFTP) (e error) { f, e = s.OpenFile(p, flags); return })
	return
}

func (r *Redialer) Mkdir(p string) error {
	return r.do(func(s fusefs.SFTP) error { return s.Mkdir(p) })
}

func (r *Redialer) Remove(p string) error {
	return r.do(func(s fusefs.SFTP) error { return s.Remove(p) })
}

func (r *Redialer) RemoveDirectory(p string) error {
	return r.do(func(s fusefs.SFTP) error { return s.RemoveDirectory(p) })
}

func (r *Redialer) PosixRename(o, n string) error {
	return r.do(func(s fusefs.SFTP) error { return s.PosixRename(o, n) })
}

func (r *Redialer) Chmod(p string, mode os.FileMode) error {
	return r.do(func(s fusefs.SFTP) error { return s.Chmod(p, mode) })
}

func (r *Redialer) Chtimes(p string, a, m time.Time) error {
	return r.do(func(s fusefs.SFTP) error { return s.Chtimes(p, a, m) })
}

func (r *Redialer) Truncate(p string, size int64) error {
	return r.do(func(s fusefs.SFTP) error { return s.Truncate(p, size) })
}

func (r *Redialer) Symlink(o, n string) error {
	return r.do(func(s fusefs.SFTP) error { return s.Symlink(o, n) })
}

func (r *Redialer) ReadLink(p string) (t string, err error) {
	err = r.do(func(s fusefs.SFTP) (e error) { t, e = s.ReadLink(p); return })
	return
}
