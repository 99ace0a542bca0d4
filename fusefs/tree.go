package fusefs

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/kubectl-cz/kubectl-cz/agent/wire"
)

// TreeRemote is a Remote whose server sends a folder tree in one stream
// (package wire's tree stream): every folder's listing, then small files'
// content. A walk then costs one round trip instead of one per folder, and
// a cp -r or grep -r reads its small files from memory instead of two
// round trips each.
type TreeRemote interface {
	Tree(ctx context.Context, req wire.TreeRequest) (io.ReadCloser, error)
}

const (
	treeBudget = 64 << 20 // content bytes per tree
	// treeWait bounds how long an open waits for content still on its way
	// before it reads the file itself.
	treeWait = 2 * time.Second
)

// treeTTL bounds how long content waits for its open (a variable for tests).
var treeTTL = 10 * time.Second

// trees is the mount's state of tree streams.
type trees struct {
	mu          sync.Mutex
	unsupported bool
	// walked are the roots walked by a tree stream, and when; listed
	// those whose walk ended well (their listings are in the cache).
	walked map[string]time.Time
	listed map[string]bool
	// contentFor are the roots whose content was asked for, and when;
	// streaming those whose content stream is still under way.
	contentFor map[string]time.Time
	streaming  map[string]bool
	// content is what the streams brought, by path, each taken once.
	content map[string]*fetched
	// listers are the streams still listing their trees; changed is
	// closed and replaced when one moves on.
	listers map[*lister]bool
	changed chan struct{}
}

// lister is a tree stream still listing its tree, at the folder it lists
// now (its listKey): a folder it has not passed may yet come in its
// listings, so a listing of it waits (and, where the stream announces
// content, an open of a small file in it).
type lister struct {
	root, at  string
	announces bool
	movedAt   time.Time // a stream that has not moved on for listStall is not waited for
}

// listStall: a stream that lists no folder for this long (a slow pod, a
// stalled link) is not waited for; what it has not listed is read another
// way.
const listStall = 500 * time.Millisecond

// walkKey orders paths as the file server sends small files' content: a
// depth-first walk of sorted names ('/' sorting first, as its NUL does).
func walkKey(p string) string { return strings.ReplaceAll(p, "/", "\x00") }

// listKey orders folders as the file server lists them: breadth first,
// each level in the order of walkKey.
func listKey(p string) string {
	return fmt.Sprintf("%04d", strings.Count(p, "/")) + walkKey(p)
}

// startListing notes a stream about to list root's tree; called with mu
// held.
func (t *trees) startListing(root string, announces bool) *lister {
	ls := &lister{root: root, at: listKey(root), announces: announces, movedAt: time.Now()}
	t.listers[ls] = true
	t.moved()
	return ls
}

// listing notes that ls lists dir now ("": it has listed all it will);
// called with mu held.
func (t *trees) listing(ls *lister, dir string) {
	if dir == "" {
		delete(t.listers, ls)
	} else {
		ls.at, ls.movedAt = listKey(dir), time.Now()
	}
	t.moved()
}

func (t *trees) moved() {
	close(t.changed)
	t.changed = make(chan struct{})
}

// later says whether a stream still listing may yet list dir (one that
// announces content, with announcing), and then what tells it moved on;
// called with mu held.
func (t *trees) later(dir string, announcing bool) <-chan struct{} {
	for ls := range t.listers {
		if (ls.announces || !announcing) && under(dir, ls.root) && listKey(dir) >= ls.at && time.Since(ls.movedAt) < listStall {
			return t.changed
		}
	}
	return nil
}

// listWait bounds how long a folder's listing waits for a tree stream to
// reach it before the folder is listed by SFTP: a walk (find, cp -r) is
// faster on the stream, an ls deep into a big tree right after its first
// listing should not wait long.
const listWait = 250 * time.Millisecond

// awaitListing waits, up to listWait, for a tree stream still listing that
// has not passed folder p; true once p's listing is in the cache.
func (l *listings) awaitListing(ctx context.Context, p string) bool {
	if l == nil {
		return false
	}
	deadline := time.Now().Add(listWait)
	for {
		if _, _, ok := l.fresh(p); ok {
			return true
		}
		l.trees.mu.Lock()
		later := l.trees.later(p, false)
		l.trees.mu.Unlock()
		if later == nil || !waitMoved(ctx, later, deadline) {
			return false
		}
	}
}

// waitMoved waits for a stream to move on (later), or for a look at
// whether it stalled; false once the deadline or ctx came first. Its timer
// is made only when there is something to wait for (every open and listing
// asks).
func waitMoved(ctx context.Context, later <-chan struct{}, deadline time.Time) bool {
	t := time.NewTimer(min(time.Until(deadline), listStall/4))
	defer t.Stop()
	select {
	case <-later:
		return true
	case <-t.C:
		return time.Now().Before(deadline)
	case <-ctx.Done():
		return false
	}
}

// under says whether p is root or inside it.
func under(p, root string) bool { return p == root || strings.HasPrefix(p, root+"/") }

// treeOf finds the tree streams behind a remote, with how the remote
// shows their entries (owners mapped to the local user).
func treeOf(r Remote) (TreeRemote, func(os.FileInfo) os.FileInfo) {
	switch r := r.(type) {
	case TreeRemote:
		return r, func(fi os.FileInfo) os.FileInfo { return fi }
	case ownedRemote:
		if tr, shown := treeOf(r.Remote); tr != nil {
			return tr, func(fi os.FileInfo) os.FileInfo { return r.mapped(shown(fi)) }
		}
	}
	return nil, nil
}

// walkTree lists the tree under root through one stream into the
// listings; false when the remote cannot (then the caller walks by SFTP).
func (l *listings) walkTree(r Remote, root string) bool {
	tr, shown := treeOf(r)
	if tr == nil {
		return false
	}
	l.trees.mu.Lock()
	if l.trees.unsupported {
		l.trees.mu.Unlock()
		return false
	}
	for w, at := range l.trees.walked {
		if time.Since(at) < l.kernelTimeout() && under(root, w) {
			l.trees.mu.Unlock()
			return true // a stream under way or done lists this folder's tree
		}
	}
	l.trees.walked[root] = time.Now()
	delete(l.trees.listed, root)
	ls := l.trees.startListing(root, false)
	l.trees.mu.Unlock()
	go func() {
		err := l.readTree(tr, shown, root, 0, nil, ls)
		if err == nil {
			l.trees.mu.Lock()
			if _, ok := l.trees.walked[root]; ok {
				l.trees.listed[root] = true
			}
			l.trees.mu.Unlock()
			return
		}
		l.trees.mu.Lock()
		l.trees.unsupported = l.trees.unsupported || errors.Is(err, wire.ErrTreeUnsupported)
		delete(l.trees.walked, root)
		l.trees.mu.Unlock()
		if entries, _, ok := l.fresh(root); ok {
			l.walkByListing(r, root, entries) // the walk it replaced
		}
	}()
	return true
}

// fetchTreeContent asks once, for the walked root that holds dir, for the
// content of its small files; true when such a fetch covers dir (then the
// folder's own fetch is not needed).
func (l *listings) fetchTreeContent(r Remote, dir string) bool {
	tr, shown := treeOf(r)
	if l == nil || tr == nil {
		return false
	}
	l.trees.mu.Lock()
	root := l.treeRoot(dir)
	if root == "" || l.trees.unsupported {
		l.trees.mu.Unlock()
		return false
	}
	at, asked := l.trees.contentFor[root]
	if asked && time.Since(at) < treeTTL {
		l.trees.mu.Unlock()
		return true
	}
	l.trees.contentFor[root] = time.Now()
	l.trees.streaming[root] = true
	listed := l.trees.listed[root]
	var ls *lister
	if !listed {
		// The walk is under way, or failed: this stream lists, too, and
		// opens wait for its announcements from now on.
		ls = l.trees.startListing(root, true)
	}
	l.trees.mu.Unlock()
	var pending map[string]*fetched
	if listed {
		// The listings are here: the stream brings content only,
		// announced from them now so that opens wait for what is on its
		// way. (Else the walk is under way, or failed: it lists, too.)
		if pending = l.announceCached(root); len(pending) == 0 {
			l.trees.mu.Lock()
			delete(l.trees.streaming, root)
			l.trees.mu.Unlock()
			return false // no small file to bring
		}
	}
	go func() {
		_ = l.readTree(tr, shown, root, treeBudget, pending, ls)
		l.trees.mu.Lock()
		delete(l.trees.streaming, root)
		l.trees.mu.Unlock()
	}()
	return true
}

// treeRoot is the walked root that holds dir, "" if none; called with
// l.trees.mu held.
func (l *listings) treeRoot(dir string) string {
	timeout := l.kernelTimeout()
	root := ""
	for w, at := range l.trees.walked {
		if time.Since(at) < timeout && under(dir, w) && (root == "" || len(w) < len(root)) {
			root = w
		}
	}
	return root
}

// contentEnded says the content stream of the tree that holds dir has
// ended: a file it brought nothing for (one it could not, or one taken
// and read again after the kernel let its pages go) is read another way.
func (l *listings) contentEnded(dir string) bool {
	if l == nil {
		return false
	}
	l.trees.mu.Lock()
	defer l.trees.mu.Unlock()
	root := l.treeRoot(dir)
	_, asked := l.trees.contentFor[root]
	return root != "" && asked && !l.trees.streaming[root]
}

// hasTreeContent says content for p was brought, or is on its way.
func (l *listings) hasTreeContent(p string) bool {
	if l == nil {
		return false
	}
	l.trees.mu.Lock()
	defer l.trees.mu.Unlock()
	return l.trees.content[p] != nil
}

// announceCached notes as on their way the small files of the cached
// listings under root, as a content stream's request bounds them: in the
// order the file server sends them (a depth-first walk of sorted names,
// '/' sorting first as its NUL does), while the budget lasts.
func (l *listings) announceCached(root string) map[string]*fetched {
	type file struct {
		p  string
		fi os.FileInfo
	}
	var files []file
	timeout := l.kernelTimeout()
	l.mu.Lock()
	for dir, e := range l.m {
		if !under(dir, root) || time.Since(e.at) > timeout {
			continue
		}
		for _, fi := range e.entries {
			if fi.Mode().IsRegular() && fi.Size() <= smallFile {
				files = append(files, file{path.Join(dir, fi.Name()), fi})
			}
		}
	}
	l.mu.Unlock()
	sort.Slice(files, func(i, j int) bool { return walkKey(files[i].p) < walkKey(files[j].p) })
	pending := map[string]*fetched{}
	budget := int64(treeBudget)
	l.trees.mu.Lock()
	defer l.trees.mu.Unlock()
	for _, f := range files {
		if f.fi.Size() > budget {
			continue
		}
		budget -= f.fi.Size()
		e := &fetched{v: versionOf(f.fi), done: make(chan struct{}), at: time.Now()}
		l.trees.content[f.p] = e
		pending[f.p] = e
	}
	return pending
}

// takeTreeContent hands an open the content a tree stream brought for p at
// version v, and when it was asked for, waiting a little for content on
// its way (or for a stream still listing to announce it); it is taken
// once. A file too big for a tree's content is not waited for.
func (l *listings) takeTreeContent(ctx context.Context, p string, v version) ([]byte, time.Time) {
	if l == nil {
		return nil, time.Time{}
	}
	deadline := time.Now().Add(treeWait)
	for {
		l.trees.mu.Lock()
		f := l.trees.content[p]
		delete(l.trees.content, p)
		var later <-chan struct{}
		if v.size <= smallFile {
			later = l.trees.later(path.Dir(p), true)
		}
		l.trees.mu.Unlock()
		if f != nil || later == nil {
			data := f.dataAt(ctx, v, max(time.Until(deadline), time.Millisecond))
			if data == nil {
				return nil, time.Time{}
			}
			return data, f.at
		}
		if !waitMoved(ctx, later, deadline) {
			return nil, time.Time{}
		}
	}
}

// dropTreeContent forgets content brought for p (it changed, or is being
// written); "" forgets all.
func (l *listings) dropTreeContent(p string) {
	if l == nil {
		return
	}
	l.trees.mu.Lock()
	if p == "" {
		l.trees.content = map[string]*fetched{}
		l.trees.listers = map[*lister]bool{}
		l.trees.moved()
		l.trees.walked = map[string]time.Time{}
		l.trees.listed = map[string]bool{}
		l.trees.contentFor = map[string]time.Time{}
		l.trees.streaming = map[string]bool{}
	} else {
		delete(l.trees.content, p)
	}
	l.trees.mu.Unlock()
}

// dropStaleTreeContent forgets content older than its time to live.
func (l *listings) dropStaleTreeContent() {
	l.trees.mu.Lock()
	defer l.trees.mu.Unlock()
	for p, f := range l.trees.content {
		if time.Since(f.at) > treeTTL {
			delete(l.trees.content, p)
		}
	}
}

var errTreeEnded = errors.New("the tree stream ended before this file's content")

// readTree reads one tree stream of root: listings go into the listings
// cache as each completes; with a budget, small files are announced as on
// their way when listed and filled in as their content arrives. Announced,
// given by path, asks for content only: those files were announced from
// the cached listings. A stream that lists tells ls where it is, so that a
// listing or an open it has not reached yet waits for it.
func (l *listings) readTree(tr TreeRemote, shown func(os.FileInfo) os.FileInfo, root string, budget int64, announced map[string]*fetched, ls *lister) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	moved := func(dir string) {
		if ls != nil {
			l.trees.mu.Lock()
			l.trees.listing(ls, dir)
			l.trees.mu.Unlock()
		}
	}
	defer func() { moved("") }()

	// pending is what this stream announced, by path: content arrives for
	// it also when an open already took it and waits.
	pending := announced
	if pending == nil {
		pending = map[string]*fetched{}
	}
	defer func() {
		// What did not come is read the usual way.
		for _, f := range pending {
			select {
			case <-f.done:
			default:
				f.err = errTreeEnded
				close(f.done)
			}
		}
	}()
	rc, err := tr.Tree(ctx, wire.TreeRequest{Root: root, Folders: walkFolders, Budget: budget, SmallFile: smallFile,
		ContentOnly: announced != nil, Encoding: wire.TreeZstd})
	if err != nil {
		return err
	}
	defer rc.Close()
	counted := &countingReader{r: rc}
	stream, err := decoded(counted)
	if err != nil {
		return err
	}
	defer stream.Close()
	at := time.Now() // listings are trusted from when they were asked for
	l.dropStaleTreeContent()
	if budget > 0 {
		// What no open took goes once its time to live is over: a
		// stream's content is not kept for good.
		time.AfterFunc(treeTTL+time.Second, l.dropStaleTreeContent)
	}

	var dir string
	var entries []os.FileInfo
	listing := false
	flush := func() {
		if listing {
			l.put(dir, entries, at)
		}
		listing, entries = false, nil
	}
	announcedBytes := int64(0)
	announce := func(p string, fi os.FileInfo) {
		if budget <= 0 || !fi.Mode().IsRegular() || fi.Size() > smallFile || announcedBytes+fi.Size() > budget {
			return
		}
		announcedBytes += fi.Size()
		f := &fetched{v: versionOf(fi), done: make(chan struct{}), at: time.Now()}
		pending[p] = f
		l.trees.mu.Lock()
		l.trees.content[p] = f
		l.trees.mu.Unlock()
	}
	arrive := func(p string, fi os.FileInfo, data []byte) {
		f := pending[p]
		if v := versionOf(fi); f == nil || !f.v.same(v) {
			return // not announced, or changed since listed
		}
		select {
		case <-f.done:
		default:
			f.data = data
			close(f.done)
		}
	}
	t := tar.NewReader(stream)
	folders := 0
	for {
		hdr, err := t.Next()
		if errors.Is(err, io.EOF) {
			if counted.n == 0 {
				return wire.ErrTreeUnsupported // closed unanswered: an older file server
			}
			flush()
			return nil
		}
		if err != nil {
			return err
		}
		name := hdr.Name
		if path.Clean(name) != name || !under(name, root) {
			return errors.New("tree stream: entry outside its root")
		}
		fi, err := treeInfoOf(hdr)
		if err != nil {
			return err
		}
		switch {
		case hdr.PAXRecords[wire.TreeList] != "":
			if folders++; folders > walkFolders {
				return errors.New("tree stream: more folders than asked for")
			}
			flush()
			dir, listing = name, true
			moved(dir)
		case hdr.PAXRecords[wire.TreeContent] != "":
			flush()
			if ls != nil {
				moved("") // listed all: what is not announced will not be
				ls = nil
			}
			if hdr.Size > smallFile {
				return errors.New("tree stream: content larger than asked for")
			}
			data, err := io.ReadAll(io.LimitReader(t, hdr.Size))
			if err != nil {
				return err
			}
			arrive(name, fi, data)
		default:
			if !listing || path.Dir(name) != dir {
				return errors.New("tree stream: an entry outside the folder being listed")
			}
			entries = append(entries, shown(fi))
			announce(name, fi)
		}
	}
}

// decoded is the tar stream of a tree stream, zstd-decoded if the file
// server compressed it (it tells by zstd's magic number: an older one
// sends plain tar, whose first bytes are a name). The decoder's memory is
// bounded: the stream comes from the pod.
func decoded(r io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, err := br.Peek(4)
	if err != nil || !bytes.Equal(magic, zstdMagic) {
		return io.NopCloser(br), nil // a short or empty stream fails in tar
	}
	d, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(8<<20), zstd.WithDecoderMaxMemory(treeBudget+64<<20))
	if err != nil {
		return nil, err
	}
	return d.IOReadCloser(), nil
}

var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// treeInfo is an entry's attributes from a tree stream, as SFTP would give
// them.
type treeInfo struct {
	name     string
	size     int64
	mode     os.FileMode
	mtime    time.Time
	uid, gid uint32
}

func (t treeInfo) Name() string       { return t.name }
func (t treeInfo) Size() int64        { return t.size }
func (t treeInfo) Mode() os.FileMode  { return t.mode }
func (t treeInfo) ModTime() time.Time { return t.mtime }
func (t treeInfo) IsDir() bool        { return t.mode.IsDir() }
func (t treeInfo) Sys() any           { return nil }
func (t treeInfo) Uid() uint32        { return t.uid }
func (t treeInfo) Gid() uint32        { return t.gid }

func treeInfoOf(hdr *tar.Header) (treeInfo, error) {
	size := hdr.Size
	if s, ok := hdr.PAXRecords[wire.TreeSize]; ok {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 {
			return treeInfo{}, errors.New("tree stream: a bad size")
		}
		size = v
	}
	var mode os.FileMode
	if s, ok := hdr.PAXRecords[wire.TreeMode]; ok {
		v, err := strconv.ParseUint(s, 8, 32)
		if err != nil {
			return treeInfo{}, errors.New("tree stream: a bad mode")
		}
		mode = fileMode(uint32(v))
	} else {
		mode = hdr.FileInfo().Mode()
	}
	return treeInfo{name: path.Base(hdr.Name), size: size, mode: mode, mtime: hdr.ModTime, uid: uint32(hdr.Uid), gid: uint32(hdr.Gid)}, nil
}

// fileMode turns a Unix mode into Go's, as pkg/sftp does.
func fileMode(m uint32) os.FileMode {
	mode := os.FileMode(m & 0o777)
	switch m & 0o170000 {
	case 0o040000:
		mode |= os.ModeDir
	case 0o120000:
		mode |= os.ModeSymlink
	case 0o010000:
		mode |= os.ModeNamedPipe
	case 0o140000:
		mode |= os.ModeSocket
	case 0o020000:
		mode |= os.ModeDevice | os.ModeCharDevice
	case 0o060000:
		mode |= os.ModeDevice
	}
	if m&0o4000 != 0 {
		mode |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= os.ModeSticky
	}
	return mode
}
