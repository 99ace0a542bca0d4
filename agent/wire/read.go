package wire

import (
	"errors"
	"fmt"
	"path"
)

// The read stream sends a range of one file as raw bytes (the file server
// sends it with sendfile(2), and the laptop reads it into memory in one
// pass), or zstd-compressed where that pays (ReadZstd). Over SFTP the same bytes cost a request, an answer packet built in
// the agent and one parsed on the laptop per 128 KiB: a cold 100 MiB read
// there was CPU-bound at ~85 MiB/s, the agent alone 0.45 s of CPU.
//
// A connection whose first byte after the secret is ReadMagic sends one
// JSON line, ReadRequest, and reads one JSON line, ReadAnswer, then (when
// the answer has no error) the file's bytes from Offset, Length of them or
// up to the file's end, in the answer's encoding, then EOF.
const ReadMagic byte = 'R'

// MaxReadLength bounds the range one read stream may ask for.
const MaxReadLength = 64 << 20

// ReadRequest asks for Length bytes of the file at Path from Offset. Zstd
// says the laptop takes them zstd-compressed where that pays (a file server
// older than that ignores it and sends them as they are).
type ReadRequest struct {
	Path   string `json:"path"`
	Offset int64  `json:"offset"`
	Length int64  `json:"length"`
	Zstd   bool   `json:"zstd,omitempty"`
}

// Validate refuses a path that is not clean and absolute, and a range
// outside the bounds.
func (r ReadRequest) Validate() error {
	switch {
	case !cleanAbs(r.Path):
		return fmt.Errorf("read path %q is not a clean absolute path", r.Path)
	case r.Offset < 0:
		return fmt.Errorf("read offset %d is negative", r.Offset)
	case r.Length < 1 || r.Length > MaxReadLength:
		return fmt.Errorf("read length %d out of 1..%d", r.Length, MaxReadLength)
	}
	return nil
}

// ReadAnswer is the file server's answer line: the file's size when it was
// opened, or why it could not be read; Encoding is how the bytes that
// follow come: as they are (""), or one zstd stream of them (ReadZstd).
type ReadAnswer struct {
	Size     int64  `json:"size"`
	Encoding string `json:"encoding,omitempty"`
	Error    string `json:"error,omitempty"`
}

// ReadZstd is the encoding of a range sent zstd-compressed: text, source,
// logs, JSON carry a third to a tenth of their bytes, and on a link whose
// relays are CPU-bound (port-forward through the API server and kubelet)
// fewer bytes are the faster read. The file server tries a sample of the
// range first and sends incompressible bytes as they are (by sendfile).
const ReadZstd = "zstd"

// cleanAbs says p is an absolute path with no . or .. or repeated /.
func cleanAbs(p string) bool { return path.IsAbs(p) && path.Clean(p) == p }

// ErrReadUnsupported is what a laptop gets from a file server that closes a
// read request unanswered (an agent older than the read stream).
var ErrReadUnsupported = errors.New("the file server does not send read streams")
