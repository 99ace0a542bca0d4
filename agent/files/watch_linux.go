//go:build linux

package files

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxWatches bounds the folders watched (the kernel's per-user limit is
// often 8,192); beyond it the laptop is told "*" and keeps short caches.
const maxWatches = 4096

const watchEvents = unix.IN_MODIFY | unix.IN_ATTRIB | unix.IN_CLOSE_WRITE | unix.IN_CREATE | unix.IN_DELETE |
	unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF

// serveWatch streams the changes under the requested roots until the
// connection ends.
func serveWatch(c net.Conn, r *bufio.Reader) error {
	defer c.Close()
	line, err := r.ReadSlice('\n')
	if err != nil {
		return err
	}
	var req WatchRequest
	if err := json.Unmarshal(line, &req); err != nil {
		return fmt.Errorf("a watch request that does not decode: %w", err)
	}
	if len(req.Roots) == 0 {
		return errors.New("a watch request without roots")
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return err
	}
	// Through the runtime's poller, so closing it ends a read under way.
	events := os.NewFile(uintptr(fd), "inotify")
	defer events.Close()
	w := &watcher{fd: fd, paths: map[int]string{}}
	// The connection closing ends the read below.
	go func() {
		_, _ = io.Copy(io.Discard, r)
		events.Close()
	}()
	out := bufio.NewWriter(c)
	var mu sync.Mutex
	send := func(p string) error {
		mu.Lock()
		defer mu.Unlock()
		if _, err := out.WriteString(p + "\n"); err != nil {
			return err
		}
		return out.Flush()
	}
	for _, root := range req.Roots {
		if !w.addTree(filepath.Clean(root)) {
			if err := send("*"); err != nil {
				return err
			}
		}
	}
	if err := send("."); err != nil { // ready: every watch is in place
		return err
	}
	buf := make([]byte, 64<<10)
	for {
		n, err := events.Read(buf)
		if err != nil || n <= 0 {
			return nil // the laptop hung up
		}
		// One line per path a read's events name: a file written in many
		// small writes is one change to the laptop, not one per write.
		sent := map[string]bool{}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := ""
			if ev.Len > 0 {
				raw := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
				name = strings.TrimRight(string(raw), "\x00")
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
				if err := send("*"); err != nil {
					return err
				}
				continue
			}
			dir, known := w.paths[int(ev.Wd)]
			if !known {
				continue
			}
			p := dir
			if name != "" {
				p = filepath.Join(dir, name)
			}
			if ev.Mask&unix.IN_ISDIR != 0 && ev.Mask&(unix.IN_CREATE|unix.IN_MOVED_TO) != 0 {
				if !w.addTree(p) {
					_ = send("*")
				}
			}
			if ev.Mask&unix.IN_IGNORED != 0 {
				delete(w.paths, int(ev.Wd))
			}
			if sent[p] {
				continue
			}
			sent[p] = true
			if err := send(p); err != nil {
				return err
			}
		}
	}
}

type watcher struct {
	fd    int
	paths map[int]string // watch descriptor -> folder
}

// addTree watches a folder and its subfolders; false if some could not be.
func (w *watcher) addTree(root string) bool {
	ok := true
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if len(w.paths) >= maxWatches {
			ok = false
			return filepath.SkipAll
		}
		wd, err := unix.InotifyAddWatch(w.fd, p, watchEvents)
		if err != nil {
			ok = false
			return nil
		}
		w.paths[wd] = p
		return nil
	})
	return ok
}
