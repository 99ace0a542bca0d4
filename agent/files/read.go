package files

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"

	"github.com/klauspost/compress/zstd"

	"github.com/kubectl-cz/kubectl-cz/agent/wire"
)

// ServeRead reads one wire.ReadRequest line from r and answers on c: the
// answer line, then the range's bytes, zstd-compressed when asked and a
// sample of them shrinks, else as they are: c is the accepted
// *net.TCPConn, so io.Copy from a limited *os.File is sendfile(2).
func ServeRead(r *bufio.Reader, c io.Writer) (Compressed, error) {
	var req wire.ReadRequest
	if err := readRequest(r, &req); err != nil {
		return Compressed{}, fmt.Errorf("read request: %w", err)
	}
	if err := req.Validate(); err != nil {
		return Compressed{}, answerRead(c, wire.ReadAnswer{Error: err.Error()})
	}
	f, size, err := openRegular(req.Path)
	if err != nil {
		return Compressed{}, answerRead(c, wire.ReadAnswer{Error: err.Error()})
	}
	defer f.Close()
	if req.Zstd && compresses(f, req.Offset, req.Length) {
		if err := answerRead(c, wire.ReadAnswer{Size: size, Encoding: wire.ReadZstd}); err != nil {
			return Compressed{}, err
		}
		zw := readEncoders.Get().(*zstd.Encoder)
		defer readEncoders.Put(zw)
		sent := &counter{w: c}
		zw.Reset(sent)
		n, err := io.Copy(zw, io.NewSectionReader(f, req.Offset, req.Length))
		if err == nil {
			err = zw.Close()
		}
		return Compressed{Bytes: n, Sent: sent.n}, err
	}
	if err := answerRead(c, wire.ReadAnswer{Size: size}); err != nil {
		return Compressed{}, err
	}
	if _, err := f.Seek(req.Offset, io.SeekStart); err != nil {
		return Compressed{}, err
	}
	_, err = io.Copy(c, io.LimitReader(f, req.Length))
	return Compressed{}, err
}

// Compressed says what a read stream sent compressed: Bytes of the file in
// Sent bytes (both 0: it went as it is).
type Compressed struct{ Bytes, Sent int64 }

// counter counts what passes to w.
type counter struct {
	w io.Writer
	n int64
}

func (c *counter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// compresses says the range's first wire.ZstdSample bytes shrink under
// zstd's fastest level: random or already compressed bytes go by sendfile,
// and cost zstd only the sample.
func compresses(f *os.File, off, n int64) bool {
	buf := make([]byte, min(n, wire.ZstdSample))
	got, err := f.ReadAt(buf, off)
	if got < 512 || (err != nil && !errors.Is(err, io.EOF)) {
		return false
	}
	return wire.Shrinks(got, len(sampler.EncodeAll(buf[:got], make([]byte, 0, got))))
}

var (
	sampler, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true))
	// readEncoders keeps the compressed ranges' encoders (one each at a
	// time; the laptop reads two or three ranges of a file at once).
	readEncoders = sync.Pool{New: func() any {
		zw, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
			zstd.WithLowerEncoderMem(true), zstd.WithWindowSize(1<<20))
		return zw
	}}
)

// openRegular opens a regular file for reading: a FIFO or a device could
// block or never end. O_NONBLOCK keeps the open itself from waiting on a
// FIFO (for a regular file it changes nothing).
func openRegular(p string) (*os.File, int64, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = errors.New("not a regular file")
	}
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("%s: %w", p, err)
	}
	return f, fi.Size(), nil
}

func answerRead(c io.Writer, a wire.ReadAnswer) error {
	line, err := json.Marshal(a)
	if err != nil {
		return err
	}
	_, err = c.Write(append(line, '\n'))
	return err
}
