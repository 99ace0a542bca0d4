// Package fusefs shows a remote file tree as a local folder with go-fuse:
// `kubectl cz mount`. It talks to the remote side through Remote (an SFTP
// client in practice), and lets the kernel cache attributes, names and
// pages for a second, so editors, grep and git see a normal, fast folder.
package fusefs

import (
	"context"
	"errors"
	"io"
	"os"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/kubectl-cz/kubectl-cz/agent/wire"
)

// File is an open remote file.
type File interface {
	io.ReaderAt
	io.WriterAt
	io.Closer
}

// Remote is the file service behind the mount.
type Remote interface {
	Lstat(p string) (os.FileInfo, error)
	ReadDir(p string) ([]os.FileInfo, error)
	OpenFile(p string, flags int) (File, error)
	Mkdir(p string) error
	Remove(p string) error
	RemoveDirectory(p string) error
	PosixRename(oldname, newname string) error
	Chmod(p string, mode os.FileMode) error
	Chtimes(p string, atime, mtime time.Time) error
	Truncate(p string, size int64) error
	Symlink(oldname, newname string) error
	ReadLink(p string) (string, error)
}

// CacheTimeout is how long the kernel may trust what it learned.
const CacheTimeout = time.Second

// Owner maps the pod's user to the local one: files the application owns
// in the pod show as the developer's here, so git and editors treat them as
// their own.
type Owner struct {
	RemoteUID, RemoteGID uint32
	LocalUID, LocalGID   uint32
	// AllowOther lets users other than the mounting one (root under sudo)
	// use the mount.
	AllowOther bool
}

// Mount serves the remote paths (a container's volume mount paths) under
// dir, each at its own path below it (/data appears as dir/data), until
// the returned server is unmounted.
func Mount(dir string, r Remote, paths []string, readOnly bool, owner *Owner) (*Mounted, error) {
	timeout := CacheTimeout
	opts := &fs.Options{
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		MountOptions: fuse.MountOptions{
			FsName:        "kubectl-cz",
			Name:          "cz",
			DirectMount:   true, // as root, without fusermount
			MaxWrite:      bigWrite,
			MaxReadAhead:  1 << 20,
			MaxBackground: 32,
			// Answers are bytes in memory, never a local file: go-fuse's
			// splice would set up a pipe per read only to fall back.
			DisableSplice: true,
		},
	}
	if readOnly {
		opts.MountOptions.Options = append(opts.MountOptions.Options, "ro")
	}
	// The kernel checks every access against the modes and owners the
	// mount reports, so under sudo (allow_other) other local users cannot
	// read the pod's files, Secret volumes included: the folders leading to
	// the volumes belong to the local user alone (0700).
	opts.MountOptions.Options = append(opts.MountOptions.Options, "default_permissions")
	folders := dirAttr{mode: 0o700, uid: uint32(os.Getuid()), gid: uint32(os.Getgid())}
	if owner != nil {
		opts.MountOptions.AllowOther = owner.AllowOther
		r = ownedRemote{Remote: r, o: *owner}
		folders.uid, folders.gid = owner.LocalUID, owner.LocalGID
	}
	root := &tree{dirNode: dirNode{attr: folders}, remote: r, paths: paths, listings: newListings()}
	srv, err := fs.Mount(dir, root, opts)
	if err != nil {
		return nil, err
	}
	widenReadAhead(dir)
	return &Mounted{Server: srv, tree: root}, nil
}

type dirAttr struct{ mode, uid, gid uint32 }

// dirNode is a local folder of the tree (the root, /etc in /etc/app).
type dirNode struct {
	fs.Inode
	attr dirAttr
}

var _ = (fs.NodeGetattrer)((*dirNode)(nil))

func (d *dirNode) Getattr(_ context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFDIR | d.attr.mode
	out.Uid, out.Gid = d.attr.uid, d.attr.gid
	out.Nlink = 2
	return 0
}

// tree is the mount's root: local folders leading to each remote path.
type tree struct {
	dirNode
	remote   Remote
	paths    []string
	listings *listings
}

var _ = (fs.NodeOnAdder)((*tree)(nil))

func (t *tree) OnAdd(ctx context.Context) {
	for _, p := range t.paths {
		parts := strings.Split(strings.Trim(path.Clean(p), "/"), "/")
		parent := &t.Inode
		for i, name := range parts {
			if child := parent.GetChild(name); child != nil {
				parent = child
				continue
			}
			var node fs.InodeEmbedder = &dirNode{attr: t.attr}
			mode := uint32(syscall.S_IFDIR)
			if i == len(parts)-1 {
				node = &remoteNode{remote: t.remote, shared: t.listings}
			}
			child := parent.NewPersistentInode(ctx, node, fs.StableAttr{Mode: mode})
			parent.AddChild(name, child, false)
			parent = child
		}
	}
}

// remoteNode is a remote file or folder. Its remote path is where it sits
// in the tree now (the tree mirrors the remote paths): a renamed node keeps
// serving, under its new name, what the kernel asks of it.
type remoteNode struct {
	fs.Inode
	remote Remote
	shared *listings // the mount's listings, read ahead (walk.go)
	writes pending   // this file's writes behind (writebehind.go)

	// The last listing of a folder: its entries' attributes answer the
	// lookups that follow (ls -l, find, cp -r) without a round trip each.
	mu       sync.Mutex
	listed   map[string]os.FileInfo
	listedAt time.Time

	// The file's version as last seen, and the version the kernel's pages
	// were read from (cache.go).
	latest, pages           version
	latestKnown, pagesKnown bool
	pagesAt                 time.Time

	// A folder's small files read ahead (prefetch.go).
	fetch *folderFetch
}

// cached is a child's attributes from a fresh listing; known reports
// whether the listing is fresh enough to say the child does not exist.
func (n *remoteNode) cached(name string) (fi os.FileInfo, known bool) {
	n.mu.Lock()
	if n.listed != nil && time.Since(n.listedAt) <= n.shared.kernelTimeout() {
		fi = n.listed[name]
		n.mu.Unlock()
		return fi, true
	}
	n.mu.Unlock()
	return n.shared.child(n.path(), name)
}

// listedInParent is this node's entry in its parent's recent listing, if
// it has the same type.
func (n *remoteNode) listedInParent() os.FileInfo {
	name, parent := n.Parent()
	if parent == nil {
		return nil
	}
	p, ok := parent.Operations().(*remoteNode)
	if !ok {
		return nil
	}
	fi, known := p.cached(name)
	if !known || fi == nil || modeOf(fi)&syscall.S_IFMT != n.StableAttr().Mode&syscall.S_IFMT {
		return nil
	}
	return fi
}

// forget drops the listing after a change made through this folder, and
// the version the kernel's cached listing was read from.
func (n *remoteNode) forget() {
	n.mu.Lock()
	n.listed = nil
	n.pagesKnown = false
	n.mu.Unlock()
	n.shared.drop(n.path())
}

// forgetParent drops the parent folder's listing after a child changed.
func (n *remoteNode) forgetParent() {
	if _, parent := n.Parent(); parent != nil {
		if p, ok := parent.Operations().(*remoteNode); ok {
			p.forget()
		}
	}
}

func (n *remoteNode) path() string { return "/" + n.Path(nil) }

var (
	_ = (fs.NodeGetattrer)((*remoteNode)(nil))
	_ = (fs.NodeSetattrer)((*remoteNode)(nil))
	_ = (fs.NodeLookuper)((*remoteNode)(nil))
	_ = (fs.NodeReaddirer)((*remoteNode)(nil))
	_ = (fs.NodeOpener)((*remoteNode)(nil))
	_ = (fs.NodeCreater)((*remoteNode)(nil))
	_ = (fs.NodeMkdirer)((*remoteNode)(nil))
	_ = (fs.NodeUnlinker)((*remoteNode)(nil))
	_ = (fs.NodeRmdirer)((*remoteNode)(nil))
	_ = (fs.NodeRenamer)((*remoteNode)(nil))
	_ = (fs.NodeSymlinker)((*remoteNode)(nil))
	_ = (fs.NodeReadlinker)((*remoteNode)(nil))
)

func (n *remoteNode) child(name string) (*remoteNode, string) {
	return &remoteNode{remote: n.remote, shared: n.shared}, path.Join(n.path(), name)
}

func (n *remoteNode) newInode(ctx context.Context, c *remoteNode, p string, fi os.FileInfo, out *fuse.EntryOut) *fs.Inode {
	fillAttr(fi, &out.Attr)
	out.SetEntryTimeout(n.shared.kernelTimeout())
	out.SetAttrTimeout(n.shared.kernelTimeout())
	id := fs.StableAttr{Mode: out.Attr.Mode & syscall.S_IFMT, Ino: inoOf(p)}
	// The node already known under this name and identity keeps its state
	// (and the kernel its pages); else a new one.
	if ch := n.GetChild(path.Base(p)); ch != nil && ch.StableAttr() == id {
		if rn, ok := ch.Operations().(*remoteNode); ok {
			rn.seen(fi)
			return ch
		}
	}
	c.seen(fi)
	return n.NewInode(ctx, c, id)
}

func (n *remoteNode) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	// A write behind changes the size and times the pod reports: wait for
	// it (its error stays for the writer).
	n.writes.wait()
	// The parent's recent listing has the attributes, trusted as long as
	// the kernel's own (a change through the mount or in the pod drops
	// it): the kernel asks again for each folder after listing it (a
	// second find asked 111 times).
	fi := n.listedInParent()
	if fi == nil {
		var err error
		if fi, err = n.remote.Lstat(n.path()); err != nil {
			return errno(err)
		}
	}
	fillAttr(fi, &out.Attr)
	out.SetTimeout(n.shared.kernelTimeout())
	n.seen(fi)
	return 0
}

func (n *remoteNode) Setattr(ctx context.Context, _ fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	n.writes.wait() // a truncate after a write behind comes after it
	n.forgetParent()
	if size, ok := in.GetSize(); ok {
		if err := n.remote.Truncate(n.path(), int64(size)); err != nil {
			return errno(err)
		}
	}
	if mode, ok := in.GetMode(); ok {
		if err := n.remote.Chmod(n.path(), os.FileMode(mode&0o7777)); err != nil {
			return errno(err)
		}
	}
	mtime, mok := in.GetMTime()
	atime, aok := in.GetATime()
	if mok || aok {
		if !mok {
			mtime = time.Now()
		}
		if !aok {
			atime = mtime
		}
		if err := n.remote.Chtimes(n.path(), atime, mtime); err != nil {
			return errno(err)
		}
	}
	return n.Getattr(ctx, nil, out)
}

func (n *remoteNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	c, p := n.child(name)
	if fi, known := n.cached(name); known {
		if fi == nil {
			return nil, syscall.ENOENT
		}
		return n.newInode(ctx, c, p, fi, out), 0
	}
	fi, err := n.remote.Lstat(p)
	if err != nil {
		return nil, errno(err)
	}
	return n.newInode(ctx, c, p, fi, out), 0
}

func (n *remoteNode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	p := n.path()
	list, at, ahead := n.shared.fresh(p)
	if !ahead && n.shared.awaitListing(ctx, p) {
		// A tree stream listing this folder's tree reached it.
		list, at, ahead = n.shared.fresh(p)
	}
	if !ahead {
		at = time.Now()
		var err error
		if list, err = n.remote.ReadDir(p); err != nil {
			return nil, errno(err)
		}
		n.shared.put(p, list, at)
		n.shared.walk(n.remote, p, list)
	}
	entries := make([]fuse.DirEntry, 0, len(list))
	listed := make(map[string]os.FileInfo, len(list))
	for _, fi := range list {
		entries = append(entries, fuse.DirEntry{Name: fi.Name(), Mode: modeOf(fi) & syscall.S_IFMT})
		listed[fi.Name()] = fi
	}
	n.mu.Lock()
	n.listed, n.listedAt = listed, at // trusted from when it was read
	n.mu.Unlock()
	if n.shared.reading() && !n.shared.fetchTreeContent(n.remote, p) {
		// Files are being read (cp -r, grep -r): this folder's small files
		// will be, too; fetch them now rather than at the first open.
		n.prefetchSiblings("")
	}
	return fs.NewListDirStream(entries), 0
}

func (n *remoteNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	n.writes.wait() // another handle's writes behind reach the pod before this one reads
	var folder *remoteNode
	name, parent := n.Parent()
	if parent != nil {
		folder, _ = parent.Operations().(*remoteNode)
	}
	readOnly := flags&syscall.O_ACCMODE == syscall.O_RDONLY && flags&syscall.O_TRUNC == 0
	if readOnly && folder != nil {
		n.mu.Lock()
		v, known := n.latest, n.latestKnown
		n.mu.Unlock()
		if known {
			data, at := folder.takeFetched(ctx, name, v)
			if data == nil {
				data, at = n.shared.takeTreeContent(ctx, n.path(), v)
			}
			if data != nil {
				// The pages the kernel gets are as new as the fetch.
				open := uint32(readOnlyOpen)
				if n.keepCache(at) || n.storeCache(data, v, at) {
					open |= fuse.FOPEN_KEEP_CACHE
				}
				return &memHandle{data: data, reads: &n.shared.kernelReads}, open, 0
			}
		}
		// keepCache notes this open's version: asked once per open. The
		// kernel holds this version's pages: a read is unlikely, so the
		// remote file is opened only at the first one, and nothing is
		// fetched ahead (a warm cp -r or grep -r costs no round trip per
		// file; fetching its folders again made a warm cp -r 4x slower
		// than the cold one).
		if n.keepCache(time.Now()) {
			return &lazyHandle{node: n, folder: folder, name: name, v: v}, readOnlyOpen | fuse.FOPEN_KEEP_CACHE, 0
		}
		n.shared.noteRead()
		// The tree this folder is in, or else the folder, is fetched
		// before this file's own open: both at once. A tree's content
		// that came and was taken, read again, is fetched again by
		// folder, not file by file.
		if !n.shared.fetchTreeContent(n.remote, folder.path()) || n.shared.contentEnded(folder.path()) {
			folder.prefetchSiblings(name)
		}
	} else if folder != nil {
		folder.dropFetched(name)
		n.shared.dropTreeContent(n.path())
	}
	if readOnly && folder == nil && n.keepCache(time.Now()) {
		return &lazyHandle{node: n}, readOnlyOpen | fuse.FOPEN_KEEP_CACHE, 0
	}
	f, err := n.remote.OpenFile(n.path(), int(flags)&(os.O_RDONLY|os.O_WRONLY|os.O_RDWR|os.O_APPEND|os.O_TRUNC))
	if err != nil {
		n.dropCache() // the version just noted was never read
		return nil, 0, errno(err)
	}
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		n.dropCache()
		return &handle{f: f, node: n, appends: flags&syscall.O_APPEND != 0}, 0, 0
	}
	h := &handle{f: f, node: n, readOnly: true}
	n.mu.Lock()
	size, known := n.latest.size, n.latestKnown
	n.mu.Unlock()
	if known {
		h.seq = newSequential(n.remote, n.path(), size)
	}
	return h, readOnlyOpen, 0
}

// readOnlyOpen: a read-only file has nothing to flush at close, so the
// kernel need not ask (one request per file less for cp -r and grep -r).
const readOnlyOpen = fuse.FOPEN_NOFLUSH

func (n *remoteNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	n.forget()
	c, p := n.child(name)
	f, err := n.remote.OpenFile(p, int(flags)&(os.O_WRONLY|os.O_RDWR|os.O_APPEND|os.O_TRUNC|os.O_EXCL)|os.O_CREATE)
	if err != nil {
		return nil, nil, 0, errno(err)
	}
	_ = n.remote.Chmod(p, os.FileMode(mode&0o7777))
	fi, err := n.remote.Lstat(p)
	if err != nil {
		f.Close()
		return nil, nil, 0, errno(err)
	}
	ino := n.newInode(ctx, c, p, fi, out)
	node, _ := ino.Operations().(*remoteNode)
	if node == nil {
		node = c
	}
	node.dropCache()
	return ino, &handle{f: f, node: node, appends: flags&syscall.O_APPEND != 0}, 0, 0
}

func (n *remoteNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	n.forget()
	c, p := n.child(name)
	if err := n.remote.Mkdir(p); err != nil {
		return nil, errno(err)
	}
	_ = n.remote.Chmod(p, os.FileMode(mode&0o7777))
	fi, err := n.remote.Lstat(p)
	if err != nil {
		return nil, errno(err)
	}
	return n.newInode(ctx, c, p, fi, out), 0
}

// settleChild waits for the writes behind of a child about to be renamed
// or removed: they go to the name they were written under.
func (n *remoteNode) settleChild(name string) {
	if ch := n.GetChild(name); ch != nil {
		if rn, ok := ch.Operations().(*remoteNode); ok {
			rn.writes.wait()
		}
	}
}

func (n *remoteNode) Unlink(ctx context.Context, name string) syscall.Errno {
	n.settleChild(name)
	n.forget()
	return errno(n.remote.Remove(path.Join(n.path(), name)))
}

func (n *remoteNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	n.forget()
	return errno(n.remote.RemoveDirectory(path.Join(n.path(), name)))
}

func (n *remoteNode) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	dst, ok := newParent.(*remoteNode)
	if !ok || flags != 0 {
		return syscall.EXDEV // across volumes, or RENAME_EXCHANGE/NOREPLACE
	}
	n.settleChild(name)
	dst.settleChild(newName)
	n.forget()
	dst.forget()
	return errno(n.remote.PosixRename(path.Join(n.path(), name), path.Join(dst.path(), newName)))
}

func (n *remoteNode) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	n.forget()
	c, p := n.child(name)
	if err := n.remote.Symlink(target, p); err != nil {
		return nil, errno(err)
	}
	fi, err := n.remote.Lstat(p)
	if err != nil {
		return nil, errno(err)
	}
	return n.newInode(ctx, c, p, fi, out), 0
}

func (n *remoteNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	t, err := n.remote.ReadLink(n.path())
	if err != nil {
		return nil, errno(err)
	}
	return []byte(t), 0
}

// handle is an open file of a node.
type handle struct {
	f        File
	node     *remoteNode
	readOnly bool
	// appends are written at once (the pod picks their offset); other
	// writes behind (writebehind.go).
	appends bool
	// seq, if set, reads a big read-only file in order through read
	// streams (stream.go).
	seq *sequential
	// ws carries the writes, once the first came, where the file server
	// takes write streams (writestream.go); else they go by SFTP.
	wsMu    sync.Mutex
	ws      *writeStream
	wsTried bool
	written int64 // bytes written through this handle
}

var (
	_ = (fs.FileReader)((*handle)(nil))
	_ = (fs.FileWriter)((*handle)(nil))
	_ = (fs.FileReleaser)((*handle)(nil))
	_ = (fs.FileFlusher)((*handle)(nil))
	_ = (fs.FileFsyncer)((*handle)(nil))
)

func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if !h.readOnly {
		h.node.writes.wait() // an error stays for the writer's flush
	}
	if h.seq != nil {
		if r, ok := h.seq.read(off, len(dest)); ok {
			return r, 0
		}
	}
	n, err := h.f.ReadAt(dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, errno(err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	h.node.forgetParent() // the listing's size of this file is out of date
	if h.appends {
		n, err := h.f.WriteAt(data, off)
		return uint32(n), errno(err)
	}
	if err := h.node.writes.write(h.sender(len(data)), data, off); err != nil {
		return 0, errno(err)
	}
	return uint32(len(data)), 0
}

// sender is how this handle's next n bytes go: by SFTP for the first
// MiB, then on the handle's write stream where the file server takes them
// (else by SFTP still, also when the stream cannot be opened: the file was
// removed, say).
func (h *handle) sender(n int) sender {
	h.wsMu.Lock()
	defer h.wsMu.Unlock()
	h.written += int64(n)
	if h.ws != nil && h.ws.failed() {
		// The stream broke (the port-forward was replaced, say): its
		// frames' error reaches the writer; the rest goes by SFTP.
		h.ws.close()
		h.ws = nil
	}
	if !h.wsTried && h.written > streamWritesAfter {
		h.wsTried = true
		if sw := behind[StreamWriter](h.node.remote); sw != nil && !h.node.shared.writesUnsupported() && streamable(h.node.path()) {
			h.ws = h.openWrites(sw)
		}
	}
	if h.ws != nil {
		return h.ws.write
	}
	return writeAt(h.f)
}

// openWrites opens the handle's write stream, for the file this handle
// has open: the file server checks that the file at its path has the size
// and time SFTP's fstat of the handle gives, once the writes so far are in
// the pod (a file renamed or replaced in the pod since is not written
// through its path). nil: the writes go by SFTP.
func (h *handle) openWrites(sw StreamWriter) *writeStream {
	st, ok := h.f.(interface{ Stat() (os.FileInfo, error) })
	if !ok {
		return nil
	}
	h.node.writes.wait()
	fi, err := st.Stat()
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), wsOpenTimeout)
	defer cancel()
	c, err := sw.OpenWrites(ctx, wire.WriteRequest{Path: h.node.path(), Size: fi.Size(), Mtime: fi.ModTime().Unix()})
	if errors.Is(err, wire.ErrWriteUnsupported) {
		h.node.shared.noWriteStreams()
	}
	if err != nil {
		return nil
	}
	return newWriteStream(c)
}

const (
	// streamWritesAfter: a file's first MiB is written by SFTP, on the
	// session there is; a write stream costs a round trip and the
	// cluster a stream pair to open, more than a small file's writes.
	streamWritesAfter = 1 << 20
	// wsOpenTimeout bounds opening a write stream.
	wsOpenTimeout = 30 * time.Second
)

// Flush (every close of the file) waits for the writes behind, so what the
// writer wrote is in the pod once close returns, or close says why not.
func (h *handle) Flush(ctx context.Context) syscall.Errno {
	if h.readOnly {
		return 0
	}
	return errno(h.node.writes.settle())
}

// Fsync reaches the pod's disk when the file server can (the agent's does:
// fsync@openssh.com); a remote that cannot says so rather than pretending.
func (h *handle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if h.readOnly {
		return 0
	}
	if err := h.node.writes.settle(); err != nil {
		return errno(err)
	}
	s, ok := h.f.(interface{ Sync() error })
	if !ok {
		return 0 // every write was acknowledged: it is in the pod, not on its disk
	}
	if err := s.Sync(); err != nil && !unsupported(err) {
		return errno(err)
	}
	return 0
}

// Release closes the remote file. A read-only one is closed in the
// background: nothing it says can matter to the reader, and a copy of many
// small files (cp -r) saves a round trip per file.
func (h *handle) Release(ctx context.Context) syscall.Errno {
	if h.readOnly {
		if h.seq != nil {
			h.seq.release()
		}
		go h.f.Close()
		return 0
	}
	h.node.dropCache()
	werr := h.node.writes.settle()
	h.wsMu.Lock()
	if h.ws != nil {
		h.ws.close()
	}
	h.wsMu.Unlock()
	if err := h.f.Close(); err != nil {
		return errno(err)
	}
	return errno(werr)
}

// behind finds what a remote also is (a RangeReader, a StreamWriter), under
// its owner mapping; the zero value when it is not.
func behind[T any](r Remote) T {
	switch r := r.(type) {
	case T:
		return r
	case ownedRemote:
		return behind[T](r.Remote)
	}
	var zero T
	return zero
}

// ownedRemote shows the remote user's files as the local user's.
type ownedRemote struct {
	Remote
	o Owner
}

func (r ownedRemote) Lstat(p string) (os.FileInfo, error) {
	fi, err := r.Remote.Lstat(p)
	if err != nil {
		return nil, err
	}
	return r.mapped(fi), nil
}

func (r ownedRemote) ReadDir(p string) ([]os.FileInfo, error) {
	list, err := r.Remote.ReadDir(p)
	for i := range list {
		list[i] = r.mapped(list[i])
	}
	return list, err
}

func (r ownedRemote) mapped(fi os.FileInfo) os.FileInfo {
	m := mappedInfo{FileInfo: fi}
	if o, ok := fi.(interface{ Uid() uint32 }); ok {
		m.uid = o.Uid()
	}
	if o, ok := fi.(interface{ Gid() uint32 }); ok {
		m.gid = o.Gid()
	}
	if m.uid == r.o.RemoteUID {
		m.uid = r.o.LocalUID
	}
	if m.gid == r.o.RemoteGID {
		m.gid = r.o.LocalGID
	}
	return m
}

type mappedInfo struct {
	os.FileInfo
	uid, gid uint32
}

func (m mappedInfo) Uid() uint32 { return m.uid }
func (m mappedInfo) Gid() uint32 { return m.gid }

func modeOf(fi os.FileInfo) uint32 {
	m := fi.Mode()
	mode := uint32(m.Perm())
	switch {
	case m.IsDir():
		mode |= syscall.S_IFDIR
	case m&os.ModeSymlink != 0:
		mode |= syscall.S_IFLNK
	case m&os.ModeNamedPipe != 0:
		mode |= syscall.S_IFIFO
	case m&os.ModeSocket != 0:
		mode |= syscall.S_IFSOCK
	case m&os.ModeDevice != 0:
		mode |= syscall.S_IFBLK
	default:
		mode |= syscall.S_IFREG
	}
	if m&os.ModeSetuid != 0 {
		mode |= syscall.S_ISUID
	}
	if m&os.ModeSetgid != 0 {
		mode |= syscall.S_ISGID
	}
	if m&os.ModeSticky != 0 {
		mode |= syscall.S_ISVTX
	}
	return mode
}

func fillAttr(fi os.FileInfo, a *fuse.Attr) {
	a.Mode = modeOf(fi)
	a.Size = uint64(fi.Size())
	a.Blocks = (a.Size + 511) / 512
	mt := fi.ModTime()
	a.SetTimes(nil, &mt, &mt)
	a.Nlink = 1
	if o, ok := fi.(interface{ Uid() uint32 }); ok {
		a.Uid = o.Uid()
	}
	if o, ok := fi.(interface{ Gid() uint32 }); ok {
		a.Gid = o.Gid()
	}
}

// errno maps the remote side's errors to what a local program expects.
func errno(err error) syscall.Errno {
	var e syscall.Errno
	switch {
	case err == nil:
		return 0
	case errors.As(err, &e):
		return e
	case errors.Is(err, os.ErrNotExist):
		return syscall.ENOENT
	case errors.Is(err, os.ErrPermission):
		return syscall.EACCES
	case errors.Is(err, os.ErrExist):
		return syscall.EEXIST
	}
	// SFTP says "failure" for the rest, with the server's message.
	msg := err.Error()
	for text, e := range map[string]syscall.Errno{
		"directory not empty": syscall.ENOTEMPTY,
		"file exists":         syscall.EEXIST,
		"is a directory":      syscall.EISDIR,
		"not a directory":     syscall.ENOTDIR,
		"no space left":       syscall.ENOSPC,
		"read-only file":      syscall.EROFS,
		"invalid argument":    syscall.EINVAL,
	} {
		if strings.Contains(msg, text) {
			return e
		}
	}
	return syscall.EIO
}
