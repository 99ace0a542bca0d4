package localnet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"

	"github.com/kubectl-cz/kubectl-cz/session"
)

// Files two teleports share (/etc/hosts, /etc/resolv.conf) get marked
// blocks, each its session's alone: a block is put in once, journaled, kept
// current in place, and taken out by its markers, whatever else changed in
// the file meanwhile. Two teleports stopped in either order give the file
// back byte for byte (kubefwd's most reported bug is a hosts file left
// behind by two of them).

// KindBlock is a marked block in a shared file, in the local journal.
const KindBlock = "teleport.block"

func init() {
	session.RegisterKind(session.Kind{Name: KindBlock, Local: true, Undo: undoBlock, Check: func(e session.Entry) error {
		var d blockData
		if err := json.Unmarshal(e.Data, &d); err != nil || d.Path == "" || !validMark(d.ID) || !validMark(d.Tag) {
			return fmt.Errorf("a teleport block entry without a path, session or tag")
		}
		return nil
	}, Describe: func(e session.Entry) session.Alteration {
		var d blockData
		_ = json.Unmarshal(e.Data, &d)
		return session.Alteration{Text: fmt.Sprintf("%s block in %s", d.Tag, d.Path)}
	}})
}

type blockData struct {
	Path string `json:"path"`
	ID   string `json:"id"`  // the session, in the markers
	Tag  string `json:"tag"` // which of its blocks
	Top  bool   `json:"top,omitempty"`
}

// validMark: markers are one line of plain words.
func validMark(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// Marker lines. A block appended to a file that did not end in a newline
// brings that newline, and says so, so it goes with the block.
func beginMark(id, tag string) string { return "# kubectl cz teleport " + id + " " + tag + ": begin" }
func endMark(id, tag string) string   { return "# kubectl cz teleport " + id + " " + tag + ": end\n" }

const (
	beginNote   = " (removed when the session closes)\n"
	beginNoteNL = " (removed when the session closes; with the newline before it)\n"
)

// SetBlock puts lines in this session's block tag of path, at the top or
// the bottom, or replaces the block's lines where it is.
func SetBlock(ctx context.Context, s *session.Session, path, tag string, top bool, lines []string) error {
	d := blockData{Path: path, ID: s.ID(), Tag: tag, Top: top}
	if !validMark(d.ID) || !validMark(tag) {
		return fmt.Errorf("block %q of session %q: not a plain word", tag, d.ID)
	}
	return withFileLock(path, func() error {
		cur, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		if next, found := replaceBlock(cur, d.ID, tag, lines); found {
			return rewrite(path, cur, next)
		}
		e, err := s.Record(ctx, KindBlock, "teleport", "", d)
		if err != nil {
			return err
		}
		if err := rewrite(path, cur, insertBlock(cur, d.ID, tag, top, lines)); err != nil {
			_ = s.Discard(ctx, e)
			if errors.Is(err, os.ErrPermission) {
				return fmt.Errorf("write %s: permission denied: teleport changes this machine's resolver, run it as root (sudo -E kubectl cz teleport ...) or use --dns none", path)
			}
			return err
		}
		_, err = s.Applied(ctx, e, nil)
		return err
	})
}

func undoBlock(_ context.Context, u *session.UndoContext, e session.Entry) error {
	var d blockData
	if err := json.Unmarshal(e.Data, &d); err != nil {
		return err
	}
	return withFileLock(d.Path, func() error {
		cur, err := os.ReadFile(d.Path)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", d.Path, err)
		}
		next, found := removeBlock(cur, d.ID, d.Tag)
		if !found {
			return nil // never written, or already taken out
		}
		if err := rewrite(d.Path, cur, next); err != nil {
			return err
		}
		fmt.Fprintf(u.Log, "removed the %s block from %s\n", d.Tag, d.Path)
		return nil
	})
}

// rewrite writes next over path in place (it may be a bind mount), with
// the mode it has.
func rewrite(path string, cur, next []byte) error {
	if bytes.Equal(cur, next) {
		return nil
	}
	mode := os.FileMode(0o644)
	if st, err := os.Stat(path); err == nil {
		mode = st.Mode().Perm()
	}
	if err := writeInPlace(path, next, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// writeInPlace writes content into path, keeping its inode (resolv.conf
// may be a bind mount, and other programs hold it open).
func writeInPlace(path string, content []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	return finish(f, content)
}

// finish writes content to f, syncs and closes it.
func finish(f *os.File, content []byte) error {
	if _, err := f.Write(content); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// withFileLock runs fn holding an exclusive lock on path: two teleports
// editing one file must not lose each other's block.
func withFileLock(path string, fn func() error) error {
	f, err := os.Open(path)
	if err != nil {
		return fn() // nothing to lock; fn says what is wrong
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", path, err)
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return fn()
}

func blockText(id, tag string, lines []string, note string) string {
	var b strings.Builder
	b.WriteString(beginMark(id, tag) + note)
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
	b.WriteString(endMark(id, tag))
	return b.String()
}

// insertBlock puts a new block at the top or the bottom of content.
func insertBlock(content []byte, id, tag string, top bool, lines []string) []byte {
	if top {
		return append([]byte(blockText(id, tag, lines, beginNote)), content...)
	}
	if len(content) > 0 && !bytes.HasSuffix(content, []byte("\n")) {
		return append(append(append([]byte{}, content...), '\n'), blockText(id, tag, lines, beginNoteNL)...)
	}
	return append(append([]byte{}, content...), blockText(id, tag, lines, beginNote)...)
}

// findBlock locates a block: its begin line's offset, the end of its end
// line, and whether it brought the newline before it.
func findBlock(content []byte, id, tag string) (start, end int, nl, found bool) {
	begin := []byte(beginMark(id, tag) + " (")
	off := 0
	for {
		i := bytes.Index(content[off:], begin)
		if i < 0 {
			return 0, 0, false, false
		}
		start = off + i
		if start == 0 || content[start-1] == '\n' {
			break
		}
		off = start + 1
	}
	lineEnd := bytes.IndexByte(content[start:], '\n')
	if lineEnd < 0 {
		return 0, 0, false, false
	}
	nl = string(content[start+len(beginMark(id, tag)):start+lineEnd+1]) == beginNoteNL
	e := bytes.Index(content[start:], []byte(endMark(id, tag)))
	if e < 0 {
		return 0, 0, false, false // torn: left alone
	}
	return start, start + e + len(endMark(id, tag)), nl, true
}

// removeBlock takes a block out, with the newline it brought. A block
// appended after it (another session's) then owes that newline, and says so.
func removeBlock(content []byte, id, tag string) ([]byte, bool) {
	start, end, nl, found := findBlock(content, id, tag)
	if !found {
		return content, false
	}
	rest := content[end:]
	if nl && start > 0 {
		i := bytes.IndexByte(rest, '\n')
		switch {
		case len(rest) == 0:
			start--
		case i >= 0 && bytes.HasPrefix(rest, []byte("# kubectl cz teleport ")) && bytes.HasSuffix(rest[:i+1], []byte(beginNote)):
			next := append([]byte{}, rest[:i+1-len(beginNote)]...)
			next = append(next, beginNoteNL...)
			rest = append(next, rest[i+1:]...)
		}
	}
	return append(append([]byte{}, content[:start]...), rest...), true
}

// replaceBlock gives an existing block new lines where it is.
func replaceBlock(content []byte, id, tag string, lines []string) ([]byte, bool) {
	start, end, nl, found := findBlock(content, id, tag)
	if !found {
		return content, false
	}
	note := beginNote
	if nl {
		note = beginNoteNL
	}
	out := append([]byte{}, content[:start]...)
	out = append(out, blockText(id, tag, lines, note)...)
	return append(out, content[end:]...), true
}
