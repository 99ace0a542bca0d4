package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The write stream carries one open file's writes to the pod, each a frame
// of raw or zstd-compressed bytes, answered in order once written. Over
// SFTP each 128 KiB of a write is a request and an answer, and its bytes
// cross the API server and kubelet as they are: a 10 MiB write + fsync ran
// at 0.4x the same run's port-forward GET.
//
// A connection whose first byte after the secret is WriteMagic sends one
// JSON line, WriteRequest, and reads one JSON line, WriteAck (the open's
// answer: the file must exist, be regular and be the one the laptop
// opened; it is opened for writing, neither created nor truncated). Then the laptop sends frames, each a
// WriteFrame header (WriteFrameSize bytes) and WireLength bytes, and the
// file server answers each, in order, with a WriteAck line once the frame's
// bytes are written at its offset (not synced: fsync goes by SFTP, and
// reaches the same file). The laptop ends by closing its side.
const WriteMagic byte = 'U'

// MaxWriteFrame bounds the bytes one frame writes (and so what a zstd
// frame may decode to).
const MaxWriteFrame = 4 << 20

// Frame encodings.
const (
	WriteRaw  byte = 0
	WriteZstd byte = 1
)

// WriteRequest opens the file at Path for writing, if it is the file the
// laptop's own open sees: Size and Mtime (Unix seconds) as SFTP's fstat of
// that open's handle gave them. A file renamed or replaced since has
// another, and is refused (the laptop then writes by SFTP, to its handle).
type WriteRequest struct {
	Path  string `json:"path"`
	Size  int64  `json:"size"`
	Mtime int64  `json:"mtime"`
}

// Validate refuses a path that is not clean and absolute.
func (r WriteRequest) Validate() error {
	if !cleanAbs(r.Path) {
		return fmt.Errorf("write path %q is not a clean absolute path", r.Path)
	}
	return nil
}

// WriteAck answers the open and each frame: empty, or why it failed.
type WriteAck struct {
	Error string `json:"error,omitempty"`
}

// WriteFrameSize is the size of a frame's header.
const WriteFrameSize = 17

// WriteFrame is a frame's header: Length bytes to write at Offset, sent as
// WireLength bytes in Encoding.
type WriteFrame struct {
	Offset     int64
	Length     uint32
	WireLength uint32
	Encoding   byte
}

// Marshal is the header's bytes: offset, length and wire length big-endian,
// then the encoding.
func (f WriteFrame) Marshal() [WriteFrameSize]byte {
	var b [WriteFrameSize]byte
	binary.BigEndian.PutUint64(b[0:], uint64(f.Offset))
	binary.BigEndian.PutUint32(b[8:], f.Length)
	binary.BigEndian.PutUint32(b[12:], f.WireLength)
	b[16] = f.Encoding
	return b
}

// ParseWriteFrame reads a header and refuses one outside the bounds.
func ParseWriteFrame(b [WriteFrameSize]byte) (WriteFrame, error) {
	f := WriteFrame{
		Offset:     int64(binary.BigEndian.Uint64(b[0:])),
		Length:     binary.BigEndian.Uint32(b[8:]),
		WireLength: binary.BigEndian.Uint32(b[12:]),
		Encoding:   b[16],
	}
	switch {
	case f.Offset < 0:
		return f, fmt.Errorf("write frame offset %d is negative", f.Offset)
	case f.Length < 1 || f.Length > MaxWriteFrame:
		return f, fmt.Errorf("write frame length %d out of 1..%d", f.Length, MaxWriteFrame)
	case f.Encoding == WriteRaw && f.WireLength != f.Length:
		return f, fmt.Errorf("raw write frame of %d bytes sent as %d", f.Length, f.WireLength)
	case f.Encoding == WriteZstd && (f.WireLength < 1 || f.WireLength > MaxWriteFrame):
		return f, fmt.Errorf("zstd write frame of %d bytes out of 1..%d", f.WireLength, MaxWriteFrame)
	case f.Encoding != WriteRaw && f.Encoding != WriteZstd:
		return f, fmt.Errorf("write frame encoding %d unknown", f.Encoding)
	}
	return f, nil
}

// ErrWriteUnsupported is what a laptop gets from a file server that closes
// a write request unanswered (an agent older than the write stream).
var ErrWriteUnsupported = errors.New("the file server does not take write streams")
