package fusefs

import (
	"context"
	"errors"
	"io"
	"os"
	"path"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Small files of a folder are fetched together, in parallel, once one of
// them is opened for reading: a program that reads one file of a folder
// (cp -r, grep -r, a build) usually reads its neighbours next, and each
// would otherwise cost two round trips in turn (open, read). An open that
// finds its file fetched, at the version the kernel knows, is served from
// memory without a round trip.
const (
	smallFile       = 64 << 10 // fetched whole: at most this size
	folderBudget    = 8 << 20  // bytes fetched ahead per folder
	prefetchWorkers = 32
	// prefetchTTL bounds how long fetched content waits for its open.
	prefetchTTL = 5 * time.Second
)

// fetched is one file's content read ahead of its open.
type fetched struct {
	v    version
	data []byte
	err  error
	done chan struct{}
	at   time.Time // when it was asked for (its content is that new, or newer)
}

// folderFetch is a folder's files read ahead, by name.
type folderFetch struct {
	started time.Time
	files   map[string]*fetched
}

// prefetchSiblings starts fetching the small files of the folder's fresh
// listing (but the one being opened), once per listing.
func (n *remoteNode) prefetchSiblings(opening string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.listed == nil || time.Since(n.listedAt) > n.shared.kernelTimeout() {
		return
	}
	if n.fetch != nil && time.Since(n.fetch.started) < prefetchTTL {
		return // this listing's neighbours are on their way
	}
	ff := &folderFetch{started: time.Now(), files: map[string]*fetched{}}
	budget := folderBudget
	type job struct {
		name string
		f    *fetched
	}
	var todo []job
	dir := n.path()
	for name, fi := range n.listed {
		if name == opening || !fi.Mode().IsRegular() || fi.Size() > smallFile || int(fi.Size()) > budget ||
			n.shared.hasTreeContent(path.Join(dir, name)) {
			continue
		}
		budget -= int(fi.Size())
		f := &fetched{v: versionOf(fi), done: make(chan struct{}), at: ff.started}
		ff.files[name] = f
		todo = append(todo, job{name, f})
	}
	if len(todo) == 0 {
		return
	}
	n.fetch = ff
	// The workers own their jobs: the map is the folder's, under its lock.
	work := make(chan job)
	for i := 0; i < min(prefetchWorkers, len(todo)); i++ {
		go func() {
			for j := range work {
				j.f.data, j.f.err = readWhole(n.remote, path.Join(dir, j.name), j.f.v.size)
				close(j.f.done)
			}
		}()
	}
	go func() {
		for _, j := range todo {
			work <- j
		}
		close(work)
	}()
}

func readWhole(r Remote, p string, size int64) ([]byte, error) {
	f, err := r.OpenFile(p, os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer func() { go f.Close() }() // nothing waits on a read-only close
	// One byte more than the listing said: a file that grew since is not
	// taken as whole.
	buf := make([]byte, size+1)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if int64(n) != size {
		return nil, errors.New("changed while read")
	}
	return buf[:n], nil
}

// takeFetched hands an open the content fetched for child name, if it was
// fetched at version v (what the kernel knows of the file now), and when
// it was asked for; it is taken once.
func (n *remoteNode) takeFetched(ctx context.Context, name string, v version) ([]byte, time.Time) {
	n.mu.Lock()
	ff := n.fetch
	var f *fetched
	if ff != nil && time.Since(ff.started) < prefetchTTL {
		f = ff.files[name]
		delete(ff.files, name)
	}
	n.mu.Unlock()
	data := f.dataAt(ctx, v, 0)
	if data == nil {
		return nil, time.Time{}
	}
	return data, f.at
}

// dataAt is the content once it is here, if fetched at version v; nil when
// it is not, failed, or takes longer than wait (0: as long as ctx lasts).
func (f *fetched) dataAt(ctx context.Context, v version, wait time.Duration) []byte {
	if f == nil || !f.v.same(v) {
		return nil
	}
	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-f.done:
	case <-timeout:
		return nil
	case <-ctx.Done():
		return nil
	}
	if f.err != nil {
		return nil
	}
	return f.data
}

// dropFetched forgets what was fetched of child name (it is being written).
func (n *remoteNode) dropFetched(name string) {
	n.mu.Lock()
	if n.fetch != nil {
		delete(n.fetch.files, name)
	}
	n.mu.Unlock()
}

// memHandle serves a file read from memory.
type memHandle struct {
	data  []byte
	reads *atomic.Int64
}

var (
	_ = (fs.FileReader)((*memHandle)(nil))
	_ = (fs.FileReleaser)((*memHandle)(nil))
)

func (h *memHandle) Read(_ context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.reads.Add(1)
	if off >= int64(len(h.data)) {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), int64(len(h.data)))
	return fuse.ReadResultData(h.data[off:end]), 0
}

func (h *memHandle) Release(context.Context) syscall.Errno { return 0 }
