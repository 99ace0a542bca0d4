package files

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/klauspost/compress/zstd"

	"github.com/kubectl-cz/kubectl-cz/agent/wire"
)

// ServeWrite reads one wire.WriteRequest line from r, opens the file for
// writing and answers on w; then writes each frame that follows at its
// offset and answers it, in order, until the laptop closes its side. It
// returns the bytes written.
func ServeWrite(r *bufio.Reader, w io.Writer) (written int64, err error) {
	var req wire.WriteRequest
	if err := readRequest(r, &req); err != nil {
		return 0, fmt.Errorf("write request: %w", err)
	}
	if err := req.Validate(); err != nil {
		return 0, answerWrite(w, err)
	}
	f, err := openForWrites(req.Path, req.Size, req.Mtime)
	if err != nil {
		return 0, answerWrite(w, err)
	}
	defer f.Close()
	if err := answerWrite(w, nil); err != nil {
		return 0, err
	}
	// The decoder's memory is bounded: a frame decodes to at most
	// MaxWriteFrame, and DecodeAll checks the frame's declared size.
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxMemory(wire.MaxWriteFrame), zstd.WithDecoderMaxWindow(wire.MaxWriteFrame))
	if err != nil {
		return 0, err
	}
	defer dec.Close()
	var wireBuf, decoded, data []byte
	for {
		var hdr [wire.WriteFrameSize]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return written, nil // the laptop is done
			}
			return written, fmt.Errorf("write frame: %w", err)
		}
		fr, err := wire.ParseWriteFrame(hdr)
		if err != nil {
			return written, err // the stream cannot be followed past a bad header
		}
		wireBuf = grow(wireBuf, int(fr.WireLength))
		if _, err := io.ReadFull(r, wireBuf); err != nil {
			return written, fmt.Errorf("write frame: %w", err)
		}
		data = wireBuf
		if fr.Encoding == wire.WriteZstd {
			if decoded, err = dec.DecodeAll(wireBuf, decoded[:0]); err == nil && len(decoded) != int(fr.Length) {
				err = fmt.Errorf("a zstd write frame of %d bytes decoded to %d", fr.Length, len(decoded))
			}
			if err != nil {
				return written, err
			}
			data = decoded
		}
		n, werr := f.WriteAt(data, fr.Offset)
		written += int64(n)
		if err := answerWrite(w, werr); err != nil {
			return written, err
		}
	}
}

func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}

// openForWrites opens an existing regular file for writing, if it has the
// size and modification time (seconds) the laptop's open of it sees: a FIFO
// or a device could block or never take the bytes, another file at that
// path (renamed or replaced since) is not the laptop's to write, and the
// write stream neither creates nor truncates (the laptop did that by SFTP).
func openForWrites(p string, size, mtime int64) (*os.File, error) {
	f, err := os.OpenFile(p, os.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	switch {
	case err != nil:
	case !fi.Mode().IsRegular():
		err = errors.New("not a regular file")
	case fi.Size() != size || fi.ModTime().Unix() != mtime:
		err = fmt.Errorf("not the file the laptop opened (%d bytes at %d, it has %d at %d): changed or replaced since",
			fi.Size(), fi.ModTime().Unix(), size, mtime)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return f, nil
}

func answerWrite(w io.Writer, err error) error {
	var a wire.WriteAck
	if err != nil {
		// Bounded: the laptop reads answers as lines of up to 4 KiB, and
		// a message may quote a long path.
		if a.Error = err.Error(); len(a.Error) > 1<<10 {
			a.Error = a.Error[:1<<10]
		}
	}
	line, merr := json.Marshal(a)
	if merr != nil {
		return merr
	}
	_, werr := w.Write(append(line, '\n'))
	return werr
}
