package wire

import (
	"errors"
	"fmt"
)

// The tree stream answers a folder tree in one round trip: every folder's
// listing, then small files' content, as a tar stream (archive/tar, the
// format kubectl cp uses). A walk of a tree by SFTP costs a round trip per
// folder and two per file read; cp -r of 2,000 files was 2.5x kubectl cp.
//
// A connection whose first byte after the secret is TreeMagic sends one
// JSON line, TreeRequest, and reads the tar stream to its end:
//   - folders in breadth-first order, each a header with TreeList set,
//     followed by a header per entry (content left out: Size 0, the real
//     size in TreeSize);
//   - then, while the budget lasts, the small regular files in the order a
//     depth-first walk of sorted names meets them, with their content and
//     TreeContent set.
//
// With ContentOnly, the listings' headers are left out (the laptop walked
// the tree already): the stream is the content alone. With Encoding
// TreeZstd the tar stream is zstd-compressed: a tar header is 1.5 KiB for
// a name and a few numbers (PAX), and 2,000 small files' listings and
// content were 7.5 MB through port-forward for 0.5 MB of content.
//
// Modification times are whole seconds, as SFTP (v3) gives them, so both
// agree on a file's version.
const TreeMagic byte = 'T'

// TreeZstd is the encoding a laptop asks for to get a zstd stream; a file
// server older than it sends plain tar, which the laptop tells apart by
// the first bytes (zstd's magic number).
const TreeZstd = "zstd"

// PAX records of the tree stream (vendor keywords, as POSIX allows).
const (
	TreeList    = "CZ.list"    // the header opens this folder's listing
	TreeSize    = "CZ.size"    // the entry's size; its content is not here
	TreeContent = "CZ.content" // the header carries the file's content
	TreeMode    = "CZ.mode"    // the entry's Unix mode (type and permissions), octal
)

// Bounds a request may ask for.
const (
	MaxTreeFolders   = 4096
	MaxTreeBudget    = 256 << 20
	MaxTreeSmallFile = 1 << 20
)

// TreeRequest asks for the tree under Root.
type TreeRequest struct {
	Root string `json:"root"`
	// Folders bounds how many folders are listed.
	Folders int `json:"folders"`
	// Budget bounds the bytes of content sent (0: listings only).
	Budget int64 `json:"budget"`
	// SmallFile is the largest file whose content is sent.
	SmallFile int64 `json:"smallFile"`
	// ContentOnly leaves the listings out (a content stream only).
	ContentOnly bool `json:"contentOnly,omitempty"`
	// Encoding is "" (plain tar) or TreeZstd.
	Encoding string `json:"encoding,omitempty"`
}

// Validate refuses requests outside the bounds, or a root that is not a
// clean absolute path.
func (r TreeRequest) Validate() error {
	switch {
	case !cleanAbs(r.Root):
		return fmt.Errorf("tree root %q is not a clean absolute path", r.Root)
	case r.Folders < 1 || r.Folders > MaxTreeFolders:
		return fmt.Errorf("tree folders %d out of 1..%d", r.Folders, MaxTreeFolders)
	case r.Budget < 0 || r.Budget > MaxTreeBudget:
		return fmt.Errorf("tree budget %d out of 0..%d", r.Budget, MaxTreeBudget)
	case r.SmallFile < 0 || r.SmallFile > MaxTreeSmallFile:
		return fmt.Errorf("tree small file %d out of 0..%d", r.SmallFile, MaxTreeSmallFile)
	case r.ContentOnly && r.Budget == 0:
		return errors.New("a tree of content only without a budget for content")
	case r.Encoding != "" && r.Encoding != TreeZstd:
		return fmt.Errorf("tree encoding %q is not %q", r.Encoding, TreeZstd)
	}
	return nil
}

// ErrTreeUnsupported is what a laptop gets from a file server that closes
// a tree request unanswered (an agent older than the tree stream).
var ErrTreeUnsupported = errors.New("the file server does not send trees")
