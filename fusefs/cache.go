package fusefs

import (
	"hash/fnv"
	"os"
	"time"
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
	same := n.pages.size == n.latest.size && n.pages.mtime.Equal(n.latest.mtime)
	keep := n.pagesKnown && n.latestKnown && same && n.pagesAt.Sub(n.pages.mtime) > mtimeMargin
	if !keep || !n.pagesKnown {
		n.pages, n.pagesAt, n.pagesKnown = n.latest, now, n.latestKnown
	}
	return keep
}

// dropCache forgets the pages' version: the file is being written here,
// so the next read-only open starts afresh.
func (n *remoteNode) dropCache() {
	n.mu.Lock()
	n.pagesKnown = false
	n.mu.Unlock()
}
