// Package localnet makes teleport's changes to the laptop, each recorded in
// the session's local journal before it is made: addresses on the loopback
// interface, marked blocks in /etc/resolv.conf or /etc/hosts (block.go), and
// env files. Their undo is registered here, so `kubectl cz session close`,
// or the next command after a crash, puts everything back.
package localnet

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/kubectl-cz/kubectl-cz/session"
)

// Entry kinds in the local journal.
const (
	KindAddress = "teleport.address"
	KindFile    = "teleport.file"
)

func init() {
	session.RegisterKind(session.Kind{Name: KindAddress, Local: true, Undo: undoAddress, Check: func(e session.Entry) error {
		var d addressData
		if err := json.Unmarshal(e.Data, &d); err != nil || net.ParseIP(d.IP) == nil || d.Link == "" {
			return fmt.Errorf("a teleport address entry without an address or a link")
		}
		return nil
	}, Describe: func(e session.Entry) session.Alteration {
		var d addressData
		_ = json.Unmarshal(e.Data, &d)
		return session.Alteration{Text: fmt.Sprintf("address %s on %s", d.IP, d.Link)}
	}})
	session.RegisterKind(session.Kind{Name: KindFile, Local: true, Undo: undoFile, Check: func(e session.Entry) error {
		var d fileData
		if err := json.Unmarshal(e.Data, &d); err != nil || d.Path == "" {
			return fmt.Errorf("a teleport file entry without a path")
		}
		return nil
	}, Describe: func(e session.Entry) session.Alteration {
		var d fileData
		_ = json.Unmarshal(e.Data, &d)
		return session.Alteration{Text: "wrote " + d.Path}
	}})
}

// Link is where teleport puts its addresses: the kernel's dummy driver is
// not on every machine, the loopback interface is.
const Link = "lo"

type addressData struct {
	IP   string `json:"ip"`
	Link string `json:"link"`
}

// Host is this machine's addresses and routes as listed once, for many
// checks (a listing per address made 1,000 Services take 2.8 s to start).
type Host struct {
	addrs  map[string]bool
	routes []*net.IPNet
}

// Snapshot lists this machine's addresses and routes.
func Snapshot() (*Host, error) { return snapshot() }

// Taken reports whether ip is this machine's, or inside a network a route
// other than the default one leads to (a VPN, the LAN): teleport must not
// shadow it.
func (h *Host) Taken(ip net.IP) bool {
	if h.addrs[ip.String()] {
		return true
	}
	for _, r := range h.routes {
		if r.Contains(ip) {
			return true
		}
	}
	return false
}

// Added notes an address put on this machine since the snapshot.
func (h *Host) Added(ip net.IP) { h.addrs[ip.String()] = true }

// AddAddress puts ip/32 on the loopback interface, journaled first.
func AddAddress(ctx context.Context, s *session.Session, ip net.IP) error {
	if err := linkExists(Link); err != nil {
		return err
	}
	e, err := s.Record(ctx, KindAddress, "teleport", "", addressData{IP: ip.String(), Link: Link})
	if err != nil {
		return err
	}
	if err := addrAdd(Link, ip); err != nil {
		_ = s.Discard(ctx, e)
		if errors.Is(err, syscall.EPERM) {
			return fmt.Errorf("add address %s to %s: not permitted: teleport changes this machine's network, run it as root (sudo -E kubectl cz teleport ...)", ip, Link)
		}
		return fmt.Errorf("add address %s to %s: %w", ip, Link, err)
	}
	_, err = s.Applied(ctx, e, nil)
	return err
}

// RemoveAddress takes an address teleport added off again (its Service went
// away); the journal entry stays, and its undo finds nothing to do.
func RemoveAddress(ip net.IP) error {
	if err := addrDel(Link, ip); err != nil {
		return fmt.Errorf("remove address %s: %w", ip, err)
	}
	return nil
}

func undoAddress(_ context.Context, u *session.UndoContext, e session.Entry) error {
	var d addressData
	if err := json.Unmarshal(e.Data, &d); err != nil {
		return err
	}
	if err := addrDel(d.Link, net.ParseIP(d.IP)); err != nil {
		return fmt.Errorf("remove address %s from %s: %w", d.IP, d.Link, err)
	}
	fmt.Fprintf(u.Log, "removed address %s from %s\n", d.IP, d.Link)
	return nil
}

type fileData struct {
	Path string `json:"path"`
	// Original is the file's content before (Absent: there was no file).
	Original []byte `json:"original"`
	Absent   bool   `json:"absent,omitempty"`
	// WrittenSHA256 is the hash of what teleport wrote, so the undo can
	// tell whether someone changed the file since; the content itself (an
	// env file holds Secret values) stays out of the journal.
	WrittenSHA256 string `json:"writtenSHA256"`
	Mode          uint32 `json:"mode"`
	// Owner is who the written file belongs to (the user behind sudo);
	// OrigMode and OrigOwner are the original file's, put back with it.
	Owner     *FileOwner `json:"owner,omitempty"`
	OrigMode  uint32     `json:"origMode,omitempty"`
	OrigOwner *FileOwner `json:"origOwner,omitempty"`
	written   []byte
}

// FileOwner is a file's user and group.
type FileOwner struct {
	UID int `json:"uid"`
	GID int `json:"gid"`
}

// InvokingUser is the user behind sudo when this process runs as root
// through it (SUDO_UID, SUDO_GID), else nil: files made for the user, and
// mounts, are theirs, not root's.
func InvokingUser() *FileOwner {
	if os.Getuid() != 0 {
		return nil
	}
	uid, err := strconv.Atoi(os.Getenv("SUDO_UID"))
	if err != nil {
		return nil
	}
	gid, err := strconv.Atoi(os.Getenv("SUDO_GID"))
	if err != nil {
		gid = uid
	}
	return &FileOwner{UID: uid, GID: gid}
}

func ownerOf(st os.FileInfo) *FileOwner {
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		return &FileOwner{UID: int(sys.Uid), GID: int(sys.Gid)}
	}
	return nil
}

func sha(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// WriteFile creates or replaces a file the user asked for (an env file),
// journaled first, so closing the session removes it or puts back what was
// there. It has the given mode, also when it existed before, and belongs to
// the user behind sudo, if any.
func WriteFile(ctx context.Context, s *session.Session, path string, content []byte, mode os.FileMode) error {
	d := fileData{Path: path, WrittenSHA256: sha(content), written: content, Mode: uint32(mode.Perm()), Owner: InvokingUser()}
	orig, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		d.Absent = true
	case err != nil:
		return fmt.Errorf("read %s: %w", path, err)
	default:
		d.Original = orig
		if st, err := os.Stat(path); err == nil {
			d.OrigMode, d.OrigOwner = uint32(st.Mode().Perm()), ownerOf(st)
		}
	}
	return writeJournaled(ctx, s, d)
}

func writeJournaled(ctx context.Context, s *session.Session, d fileData) error {
	e, err := s.Record(ctx, KindFile, "teleport", "", d)
	if err != nil {
		return err
	}
	if err := writeInPlace(d.Path, d.written, os.FileMode(d.Mode), d.Owner); err != nil {
		// The write may have truncated the file: put the original back.
		if d.Absent {
			os.Remove(d.Path)
		} else {
			_ = writeInPlace(d.Path, d.Original, d.origMode(), d.OrigOwner)
		}
		_ = s.Discard(ctx, e)
		if errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("write %s: permission denied: teleport changes this machine's resolver, run it as root (sudo -E kubectl cz teleport ...) or use --dns none", d.Path)
		}
		return fmt.Errorf("write %s: %w", d.Path, err)
	}
	_, err = s.Applied(ctx, e, nil)
	return err
}

// origMode is the mode the original file had.
func (d fileData) origMode() os.FileMode {
	if d.OrigMode != 0 {
		return os.FileMode(d.OrigMode)
	}
	return os.FileMode(d.Mode)
}

// writeInPlace writes content into path, which then has mode (also if it
// existed: a file that was 0644 must not keep Secret values readable) and,
// if given, owner.
func writeInPlace(path string, content []byte, mode os.FileMode, owner *FileOwner) error {
	flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	if owner != nil {
		// A file handed to another user is never reached through a
		// symlink: root would truncate and give away its target.
		flags |= syscall.O_NOFOLLOW
	}
	f, err := os.OpenFile(path, flags, mode&0o600)
	if err != nil {
		return err
	}
	if owner != nil {
		if err := f.Chown(owner.UID, owner.GID); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
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

func undoFile(_ context.Context, u *session.UndoContext, e session.Entry) error {
	var d fileData
	if err := json.Unmarshal(e.Data, &d); err != nil {
		return err
	}
	cur, err := os.ReadFile(d.Path)
	switch {
	case errors.Is(err, os.ErrNotExist) && d.Absent:
		return nil // already gone
	case err != nil:
		return fmt.Errorf("read %s: %w", d.Path, err)
	case !d.Absent && bytes.Equal(cur, d.Original):
		return nil // never written, or already put back
	case sha(cur) != d.WrittenSHA256 && !(d.Absent && len(cur) == 0) && !u.Force:
		return fmt.Errorf("%s: %w (--force puts the original back)", d.Path, session.ErrConflict)
	}
	if d.Absent {
		if err := os.Remove(d.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", d.Path, err)
		}
		fmt.Fprintf(u.Log, "removed %s\n", d.Path)
		return nil
	}
	if err := writeInPlace(d.Path, d.Original, d.origMode(), d.OrigOwner); err != nil {
		return fmt.Errorf("restore %s: %w", d.Path, err)
	}
	fmt.Fprintf(u.Log, "restored %s\n", d.Path)
	return nil
}

// ResolverLines are the lines of teleport's two resolver blocks: a
// nameserver line for the shim at dnsIP (a block at the top: the first
// nameserver is asked first) and a search line with the cluster's domains
// in front of those in force (a block at the bottom: the last search line
// wins). It returns the nameservers that were there, for the shim to
// forward other names to: another teleport's shim among them.
func ResolverLines(cur []byte, dnsIP string, search []string) (nameserver, searchLine []string, upstreams []string) {
	var inForce []string
	for _, line := range strings.Split(string(cur), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "nameserver":
			if f[1] != dnsIP {
				upstreams = append(upstreams, net.JoinHostPort(f[1], "53"))
			}
		case len(f) >= 2 && (f[0] == "search" || f[0] == "domain"):
			inForce = f[1:] // the last one wins
		}
	}
	seen := map[string]bool{}
	var domains []string
	for _, d := range append(append([]string{}, search...), inForce...) {
		if !seen[d] {
			seen[d] = true
			domains = append(domains, d)
		}
	}
	return []string{"nameserver " + dnsIP}, []string{"search " + strings.Join(domains, " ")}, upstreams
}
