package fusefs

import (
	"path"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// With a watch on the remote side telling what changes (the agent's
// inotify stream), the kernel may trust names and attributes for
// WatchedTimeout instead of CacheTimeout: each change is dropped exactly,
// by Invalidate, when it happens.
const WatchedTimeout = 30 * time.Second

// watchState is whether the mount's remote side is watched.
type watchState struct{ on atomic.Bool }

// kernelTimeout is how long the kernel may keep a name or attributes.
func (l *listings) kernelTimeout() time.Duration {
	if l != nil && l.watch.on.Load() {
		return WatchedTimeout
	}
	return CacheTimeout
}

// Mounted is a served mount.
type Mounted struct {
	*fuse.Server
	tree *tree
}

// Watched says whether a watch now tells every change: on, the kernel keeps
// what it learns for WatchedTimeout; off (the watch was lost), everything
// the kernel holds is dropped and CacheTimeout applies again.
func (m *Mounted) Watched(on bool) {
	was := m.tree.listings.watch.on.Swap(on)
	if was && !on {
		m.InvalidateAll()
	}
}

// Invalidate drops what the mount and the kernel know of a remote path
// that changed: its pages and attributes, its name in its folder, and the
// folder's listing.
func (m *Mounted) Invalidate(p string) {
	p = path.Clean("/" + p)
	dir, name := path.Dir(p), path.Base(p)
	m.tree.listings.drop(p)
	m.tree.listings.drop(dir)
	m.tree.listings.dropTreeContent(p)
	if node := m.find(p); node != nil {
		if rn, ok := node.Operations().(*remoteNode); ok {
			rn.changed()
		}
		_ = node.NotifyContent(0, 0)
	}
	if parent := m.find(dir); parent != nil {
		if rn, ok := parent.Operations().(*remoteNode); ok {
			rn.forget()
		}
		_ = parent.NotifyEntry(name)
		_ = parent.NotifyContent(0, 0) // a cached listing
	}
}

// InvalidateAll drops everything (changes were lost).
func (m *Mounted) InvalidateAll() {
	m.tree.listings.dropTreeContent("")
	var walk func(*fs.Inode)
	walk = func(n *fs.Inode) {
		for name, c := range n.Children() {
			walk(c)
			if rn, ok := c.Operations().(*remoteNode); ok {
				rn.changed()
				rn.forget()
			}
			_ = n.NotifyEntry(name)
		}
	}
	walk(&m.tree.Inode)
	m.tree.listings.mu.Lock()
	m.tree.listings.m = map[string]listing{}
	m.tree.listings.mu.Unlock()
}

// find is the node of a remote path the kernel knows, or nil.
func (m *Mounted) find(p string) *fs.Inode {
	n := &m.tree.Inode
	for _, part := range strings.Split(strings.Trim(p, "/"), "/") {
		if part == "" {
			continue
		}
		if n = n.GetChild(part); n == nil {
			return nil
		}
	}
	return n
}

// changed forgets a node's versions: its next open reads afresh.
func (n *remoteNode) changed() {
	n.mu.Lock()
	n.pagesKnown, n.latestKnown = false, false
	n.mu.Unlock()
}
