package fusefs

import (
	"os"
	"path"
	"sync"
	"sync/atomic"
	"time"
)

// A folder listed from the remote side has its subfolders listed right
// after, in parallel, into a listing cache the whole mount shares: a
// program that walks a tree (find, cp -r, grep -r, git) then finds the
// next folders' listings here instead of waiting a round trip for each in
// turn. Listings are trusted for CacheTimeout from when they were read,
// like every other attribute.
const (
	walkWorkers = 16
	walkFolders = 1024 // folders listed ahead per walk
)

// listing is one folder's entries as read at a time.
type listing struct {
	at      time.Time
	entries []os.FileInfo
	byName  map[string]os.FileInfo
}

// listings is the mount's shared cache of folder listings, by path.
type listings struct {
	mu      sync.Mutex
	m       map[string]listing
	walking map[string]bool // roots of walks under way
	// lastRead is when a file was last opened for reading (unix ns): a
	// folder listed soon after gets its small files fetched at once.
	lastRead atomic.Int64
	watch    watchState
	trees    trees
	// kernelListings counts the listings the kernel asked this mount for
	// (those it did not serve from its own cache).
	kernelListings atomic.Int64
	// kernelReads counts the reads the kernel asked of content held in
	// memory (those storeCache did not spare it).
	kernelReads atomic.Int64
	// noWrites: the file server takes no write streams (an older one).
	noWrites atomic.Bool
}

// readingPattern: a file was opened for reading within this long.
const readingPattern = 2 * time.Second

func (l *listings) noteRead() {
	if l != nil {
		l.lastRead.Store(time.Now().UnixNano())
	}
}

func (l *listings) writesUnsupported() bool { return l != nil && l.noWrites.Load() }

func (l *listings) noWriteStreams() {
	if l != nil {
		l.noWrites.Store(true)
	}
}

func (l *listings) reading() bool {
	return l != nil && time.Since(time.Unix(0, l.lastRead.Load())) < readingPattern
}

func newListings() *listings {
	return &listings{m: map[string]listing{}, walking: map[string]bool{}, trees: trees{
		walked: map[string]time.Time{}, listed: map[string]bool{}, contentFor: map[string]time.Time{}, streaming: map[string]bool{}, content: map[string]*fetched{},
		listers: map[*lister]bool{}, changed: make(chan struct{})}}
}

// fresh is a folder's listing and when it was read, if recent enough
// (kernelTimeout: longer while a watch drops each change).
func (l *listings) fresh(p string) ([]os.FileInfo, time.Time, bool) {
	if l == nil {
		return nil, time.Time{}, false
	}
	timeout := l.kernelTimeout()
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.m[p]
	if !ok || time.Since(e.at) > timeout {
		return nil, time.Time{}, false
	}
	return e.entries, e.at, true
}

func (l *listings) put(p string, entries []os.FileInfo, at time.Time) {
	if l == nil {
		return
	}
	l.mu.Lock()
	byName := make(map[string]os.FileInfo, len(entries))
	for _, fi := range entries {
		byName[fi.Name()] = fi
	}
	l.m[p] = listing{at: at, entries: entries, byName: byName}
	// Old listings go: a long walk must not keep the whole tree in memory.
	if len(l.m) > 4*walkFolders {
		for k, e := range l.m {
			if time.Since(e.at) > CacheTimeout {
				delete(l.m, k)
			}
		}
	}
	l.mu.Unlock()
}

// child is a folder's entry by name from a recent listing; known says
// whether there is such a listing (then a nil entry means no such name).
func (l *listings) child(dir, name string) (fi os.FileInfo, known bool) {
	if l == nil {
		return nil, false
	}
	timeout := l.kernelTimeout()
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.m[dir]
	if !ok || time.Since(e.at) > timeout {
		return nil, false
	}
	return e.byName[name], true
}

// drop forgets a folder's listing after a change made through the mount.
func (l *listings) drop(p string) {
	if l == nil {
		return
	}
	l.mu.Lock()
	delete(l.m, p)
	l.mu.Unlock()
}

// walk lists the subfolders of root (whose entries were just read) and
// theirs, up to walkFolders, walkWorkers at a time, in the background.
func (l *listings) walk(r Remote, root string, entries []os.FileInfo) {
	if l == nil || l.walkTree(r, root) {
		return
	}
	l.walkByListing(r, root, entries)
}

// walkByListing walks by listing each folder (a remote without trees).
func (l *listings) walkByListing(r Remote, root string, entries []os.FileInfo) {
	l.mu.Lock()
	if l.walking[root] {
		l.mu.Unlock()
		return
	}
	l.walking[root] = true
	l.mu.Unlock()
	go func() {
		defer func() {
			l.mu.Lock()
			delete(l.walking, root)
			l.mu.Unlock()
		}()
		// A queue of folders to list, fed by the listings themselves; done
		// when it is empty and no listing is under way.
		var mu sync.Mutex
		cond := sync.NewCond(&mu)
		var queue []string
		inflight, budget := 0, walkFolders
		enqueue := func(dir string, list []os.FileInfo) {
			for _, fi := range list {
				if fi.IsDir() && budget > 0 {
					budget--
					queue = append(queue, path.Join(dir, fi.Name()))
				}
			}
		}
		mu.Lock()
		enqueue(root, entries)
		mu.Unlock()
		var wg sync.WaitGroup
		for i := 0; i < walkWorkers; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					mu.Lock()
					for len(queue) == 0 && inflight > 0 {
						cond.Wait()
					}
					if len(queue) == 0 {
						mu.Unlock()
						cond.Broadcast()
						return
					}
					dir := queue[0]
					queue = queue[1:]
					inflight++
					mu.Unlock()

					var list []os.FileInfo
					if _, _, ok := l.fresh(dir); !ok {
						at := time.Now()
						if got, err := r.ReadDir(dir); err == nil {
							l.put(dir, got, at)
							list = got
						}
					}
					mu.Lock()
					enqueue(dir, list)
					inflight--
					mu.Unlock()
					cond.Broadcast()
				}
			}()
		}
		wg.Wait()
	}()
}
