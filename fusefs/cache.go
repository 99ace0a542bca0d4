package fusefs

import (
	"context"
	"hash/fnv"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// The kernel's page cache is kept across opens of a file whose size and
// modification time have not changed since the last open (close-to-open
// consistency, as NFS does): a second read of an unchanged file is served
// from memory, and a change made in the pod is seen at the next open once
// the kernel refreshes the file's attributes (CacheTimeout).
//
// That needs a stable identity: a node looked up again under the same path
// keeps its inode number, so the kernel keeps the inode and its pages.

// inoOf is a path's inode number: a hash below go-fuse's automatic
// numbers (1<<63 and up), above the root's 1.
func inoOf(p string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(p))
	ino := h.Sum64() &^ (1 << 63)
	if ino < 2 {
		ino += 2
	}
	return ino
}

// mtimeMargin: SFTP carries modification times in whole seconds, so a
// file changed twice within one second keeps its mtime. Its pages are
// kept only if, when they were read, the file had been unchanged for
// longer than this (a later change then shows as a newer second). It
// also covers a few seconds of clock skew between laptop and node.
const mtimeMargin = 3 * time.Second

// version is what the kernel's cached pages of a file were read from.
type version struct {
	size  int64
	mtime time.Time
}

func versionOf(fi os.FileInfo) version { return version{fi.Size(), fi.ModTime()} }

func (v version) same(w version) bool { return v.size == w.size && v.mtime.Equal(w.mtime) }

// seen notes the file's attributes as last read from the remote.
func (n *remoteNode) seen(fi os.FileInfo) {
	n.mu.Lock()
	n.latest, n.latestKnown = versionOf(fi), true
	n.mu.Unlock()
}

// keepCache says, at a read-only open, whether the kernel may keep the
// pages it has, and notes this open's version for the next one.
func (n *remoteNode) keepCache(now time.Time) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	same := n.pages.same(n.latest)
	keep := n.pagesKnown && n.latestKnown && same && n.pagesAt.Sub(n.pages.mtime) > mtimeMargin
	if !keep || !n.pagesKnown {
		n.pages, n.pagesAt, n.pagesKnown = n.latest, now, n.latestKnown
	}
	return keep
}

// storeCache hands the kernel a whole file's content at version v as its
// pages, at an open about to be answered from memory: the program's reads
// then find them, instead of each asking this process (one request and two
// context switches less per small file for cp -r and grep -r). Only for a
// file unchanged for mtimeMargin, as keepCache would keep it; true when the
// pages are the kernel's, to be kept. at is when the content was asked
// for: it had been unchanged for the margin then.
func (n *remoteNode) storeCache(data []byte, v version, at time.Time) bool {
	if len(data) == 0 || int64(len(data)) != v.size || at.Sub(v.mtime) <= mtimeMargin {
		return false
	}
	if errno := n.WriteCache(0, data); errno != 0 {
		return false
	}
	n.mu.Lock()
	n.pages, n.pagesAt, n.pagesKnown = v, at, true
	n.mu.Unlock()
	return true
}

// dropCache forgets the pages' version: the file is being written here,
// so the next read-only open starts afresh.
func (n *remoteNode) dropCache() {
	n.mu.Lock()
	n.pagesKnown = false
	n.mu.Unlock()
}

// lazyHandle is a read-only open of a file whose pages the kernel keeps:
// the remote file is opened at the first read, if one comes. One that
// comes means the kernel let the pages go (memory pressure, drop_caches),
// likely its neighbours' too: the folder's small files are then fetched
// together, and this one taken from such a fetch if one brought it.
type lazyHandle struct {
	node   *remoteNode
	folder *remoteNode // nil for the root
	name   string
	v      version // the version opened

	mu   sync.Mutex
	f    File
	data []byte // the whole file, from the folder's fetch
}

var (
	_ = (fs.FileReader)((*lazyHandle)(nil))
	_ = (fs.FileReleaser)((*lazyHandle)(nil))
)

func (h *lazyHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.mu.Lock()
	if h.f == nil && h.data == nil {
		h.node.shared.noteRead()
		if h.folder != nil {
			h.data, _ = h.folder.takeFetched(ctx, h.name, h.v)
			h.folder.prefetchSiblings(h.name)
		}
		if h.data == nil {
			f, err := h.node.remote.OpenFile(h.node.path(), os.O_RDONLY)
			if err != nil {
				h.mu.Unlock()
				return nil, errno(err)
			}
			h.f = f
		}
	}
	f, data := h.f, h.data
	h.mu.Unlock()
	if data != nil {
		return (&memHandle{data: data, reads: &h.node.shared.kernelReads}).Read(ctx, dest, off)
	}
	return (&handle{f: f, node: h.node, readOnly: true}).Read(ctx, dest, off)
}

func (h *lazyHandle) Release(context.Context) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.f != nil {
		go h.f.Close() // nothing waits on a read-only close
	}
	return 0
}

// dirHandle lists a folder on demand, as go-fuse's own directory handle
// does; OpendirHandle returns it with flags that let the kernel keep the
// listing while the folder is unchanged.
type dirHandle struct {
	n  *remoteNode
	ds fs.DirStream
}

var (
	_ = (fs.NodeOpendirHandler)((*remoteNode)(nil))
	_ = (fs.FileReaddirenter)((*dirHandle)(nil))
	_ = (fs.FileReleasedirer)((*dirHandle)(nil))
)

// OpendirHandle: a folder whose size and mtime match its last listing (an
// entry added or removed in the pod changes its mtime) keeps the kernel's
// cached listing; changes made through the mount make the kernel drop it.
func (n *remoteNode) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	// The kernel may always cache what this open lists (it is read now);
	// it keeps what it had only while the folder is unchanged.
	open := uint32(fuse.FOPEN_CACHE_DIR)
	if n.keepCache(time.Now()) {
		open |= fuse.FOPEN_KEEP_CACHE
	}
	return &dirHandle{n: n}, open, 0
}

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if d.ds == nil {
		d.n.shared.kernelListings.Add(1)
		ds, errno := d.n.Readdir(ctx)
		if errno != 0 {
			return nil, errno
		}
		d.ds = ds
	}
	if !d.ds.HasNext() {
		return nil, 0
	}
	e, errno := d.ds.Next()
	return &e, errno
}

func (d *dirHandle) Releasedir(ctx context.Context, releaseFlags uint32) {
	if d.ds != nil {
		d.ds.Close()
	}
}
