// Package localnet makes teleport's changes to the laptop, each recorded in
// the session's local journal before it is made: addresses on the loopback
// interface, marked blocks in /etc/resolv.conf or /etc/hosts (block.go), and
// env files. Their undo is registered here, so `kubectl cz session close`,
// or the next command after a crash, puts everything back.
package localnet

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
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
	session.RegisterKind(session.Kind{Name: KindAddress, Local: true, Undo: undoAddress, Many: func(n int) string {
		return fmt.Sprintf("removed %d addresses teleport had added", n)
	}, Check: func(e session.Entry) error {
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
		if err := json.Unmarshal(e.Data, &d); err != nil {
			return fmt.Errorf("a teleport file entry that does not decode")
		}
		return checkFile(d)
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

// NewHost is a machine with no address and no route yet.
func NewHost() *Host { return &Host{addrs: map[string]bool{}} }

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

// AddAddresses adds many addresses as AddAddress does, journaled in one
// write before and one after (a teleport of 1,000 Services adds 1,000). It
// returns the error of each address that could not be added, by position;
// their entries are discarded.
func AddAddresses(s *session.Session, ips []net.IP) ([]error, error) {
	if len(ips) == 0 {
		return nil, nil
	}
	if err := linkExists(Link); err != nil {
		return nil, err
	}
	data := make([]any, len(ips))
	for i, ip := range ips {
		data[i] = addressData{IP: ip.String(), Link: Link}
	}
	entries, err := s.RecordLocal(KindAddress, "teleport", data)
	if err != nil {
		return nil, err
	}
	errs := make([]error, len(ips))
	var added, failed []session.Entry
	for i, ip := range ips {
		if err := addrAdd(Link, ip); err != nil {
			failed = append(failed, entries[i])
			if errors.Is(err, syscall.EPERM) {
				// Not root: none of the others can be added either.
				_ = s.DiscardLocal(append(failed, entries[i+1:]...))
				_ = s.AppliedLocal(added)
				return nil, fmt.Errorf("add address %s to %s: not permitted: teleport changes this machine's network, run it as root (sudo -E kubectl cz teleport ...)", ip, Link)
			}
			errs[i] = fmt.Errorf("add address %s to %s: %w", ip, Link, err)
			continue
		}
		added = append(added, entries[i])
	}
	_ = s.DiscardLocal(failed)
	return errs, s.AppliedLocal(added)
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
	// Absent: there was no file. Otherwise the original was renamed aside
	// to Saved, in the same folder, and comes back by a rename: its bytes,
	// mode, owner and inode, with no copy of its content anywhere (an
	// earlier env file holds Secret values too). SavedSHA256 tells it from
	// a file put there since.
	Absent      bool   `json:"absent,omitempty"`
	Saved       string `json:"saved,omitempty"`
	SavedSHA256 string `json:"savedSHA256,omitempty"`
	// WrittenSHA256 is the hash of what was written, so the undo can tell
	// whether someone changed the file since; the content itself stays out
	// of the journal.
	WrittenSHA256 string `json:"writtenSHA256"`
	Mode          uint32 `json:"mode"`
	// Owner is who the written file belongs to (the user behind sudo).
	Owner   *FileOwner `json:"owner,omitempty"`
	written []byte
}

// checkFile refuses a file entry that could make an undo rename anything
// but the file's own set-aside original back.
func checkFile(d fileData) error {
	if d.Path == "" || !filepath.IsAbs(d.Path) {
		return fmt.Errorf("a file entry without an absolute path")
	}
	if d.Absent != (d.Saved == "") {
		return fmt.Errorf("a file entry for %s that has both or neither of absent and saved", d.Path)
	}
	if d.Saved != "" && (filepath.Dir(d.Saved) != filepath.Dir(d.Path) || !strings.HasPrefix(filepath.Base(d.Saved), savedPrefix(d.Path))) {
		return fmt.Errorf("a file entry for %s whose original is kept elsewhere (%s)", d.Path, d.Saved)
	}
	return nil
}

// savedPrefix starts the name an original is set aside under, beside it.
func savedPrefix(path string) string { return "." + filepath.Base(path) + ".cz-saved-" }

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
// there. It has the given mode and belongs to the user behind sudo, if
// any. A file that was there is renamed aside rather than copied, so the
// journal holds hashes only.
func WriteFile(ctx context.Context, s *session.Session, path string, content []byte, mode os.FileMode) error {
	path, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	d := fileData{Path: path, WrittenSHA256: sha(content), written: content, Mode: uint32(mode.Perm()), Owner: InvokingUser()}
	st, err := os.Lstat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		d.Absent = true
	case err != nil:
		return fmt.Errorf("%s: %w", path, err)
	case st.IsDir():
		return fmt.Errorf("%s is a folder: name a file", path)
	default:
		orig, err := os.ReadFile(path)
		if err != nil && !errors.Is(err, os.ErrNotExist) { // a dangling symlink is set aside too
			return fmt.Errorf("read %s: %w", path, err)
		}
		var nonce [6]byte
		if _, err := rand.Read(nonce[:]); err != nil {
			return err
		}
		d.Saved = filepath.Join(filepath.Dir(path), savedPrefix(path)+hex.EncodeToString(nonce[:]))
		d.SavedSHA256 = sha(orig)
	}
	e, err := s.Record(ctx, KindFile, "teleport", "", d)
	if err != nil {
		return err
	}
	if err := writeAside(d); err != nil {
		_ = s.Discard(ctx, e)
		return err
	}
	_, err = s.Applied(ctx, e, nil)
	return err
}

// writeAside sets the original aside (if any) and writes a new file in its
// place; on failure the original is back.
func writeAside(d fileData) error {
	if !d.Absent {
		if err := os.Rename(d.Path, d.Saved); err != nil {
			return fmt.Errorf("set %s aside: %w", d.Path, err)
		}
	}
	if err := create(d.Path, d.written, os.FileMode(d.Mode), d.Owner); err != nil {
		os.Remove(d.Path)
		if !d.Absent {
			_ = os.Rename(d.Saved, d.Path)
		}
		return fmt.Errorf("write %s: %w", d.Path, err)
	}
	return nil
}

// create makes a new file at path (never through a symlink, never an
// existing file: root must not truncate or give away another file) with
// mode and, if given, owner.
func create(path string, content []byte, mode os.FileMode, owner *FileOwner) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, mode&0o600)
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
	return finish(f, content)
}

func undoFile(_ context.Context, u *session.UndoContext, e session.Entry) error {
	var d fileData
	if err := json.Unmarshal(e.Data, &d); err != nil {
		return err
	}
	if err := checkFile(d); err != nil {
		return err
	}
	cur, err := os.ReadFile(d.Path)
	gone := errors.Is(err, os.ErrNotExist)
	if err != nil && !gone {
		return fmt.Errorf("read %s: %w", d.Path, err)
	}
	if !d.Absent {
		saved, serr := os.ReadFile(d.Saved)
		_, lerr := os.Lstat(d.Saved)
		switch {
		case errors.Is(lerr, os.ErrNotExist) && !gone && sha(cur) == d.SavedSHA256:
			return nil // never set aside, or already put back
		case errors.Is(lerr, os.ErrNotExist):
			return fmt.Errorf("%s: its original, set aside as %s, is gone: %w", d.Path, d.Saved, session.ErrConflict)
		case serr == nil && sha(saved) != d.SavedSHA256 && !u.Force:
			return fmt.Errorf("%s: %s is not the original set aside: %w (--force puts it back anyway)", d.Path, d.Saved, session.ErrConflict)
		}
	}
	if !gone && sha(cur) != d.WrittenSHA256 && len(cur) > 0 && !u.Force {
		return fmt.Errorf("%s: %w (--force puts the original back)", d.Path, session.ErrConflict)
	}
	if d.Absent {
		if gone {
			return nil
		}
		if err := os.Remove(d.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", d.Path, err)
		}
		fmt.Fprintf(u.Log, "removed %s\n", d.Path)
		return nil
	}
	if err := os.Rename(d.Saved, d.Path); err != nil {
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
