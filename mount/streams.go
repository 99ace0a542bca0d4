package mount

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/klauspost/compress/zstd"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubectl-cz/kubectl-cz/agent/wire"
	"github.com/kubectl-cz/kubectl-cz/pfconn"
)

// Streams opens the file server's tree and read streams (package wire),
// each a stream of its own on one port-forward connection kept for them (a
// new one costs 20-60 ms here, a stream on it one round trip), apart from
// SFTP's. Close ends it.
type Streams struct {
	Rest  *rest.Config
	Kube  kubernetes.Interface
	NS    string
	Pod   string
	Agent Agent
	// Compress asks for read streams zstd-compressed where they shrink. Off
	// by default: on the local cluster's link (port-forward at 110-200
	// MiB/s, CPU-bound) a 100 MiB log came at ~77 MiB/s compressed and
	// 107-127 as it is, the file server's compression (~140 MiB/s a core
	// here) being the slower part; on a link slower than that, logs and
	// text arrive in a third to a tenth of the time.
	Compress bool

	mu sync.Mutex
	pf *pfconn.Conn
}

// Tree asks for one tree.
func (t *Streams) Tree(ctx context.Context, req wire.TreeRequest) (io.ReadCloser, error) {
	s, err := t.open(ctx, wire.TreeMagic, req)
	if err != nil {
		return nil, fmt.Errorf("tree stream: %w", err)
	}
	return s, nil
}

// open starts one stream: a new stream on the kept connection, closed when
// ctx ends, that has sent its request.
func (t *Streams) open(ctx context.Context, magic byte, req any) (*stream, error) {
	c, err := t.dial(ctx)
	if err != nil {
		return nil, err
	}
	s := &stream{Conn: c}
	s.stop = context.AfterFunc(ctx, func() { s.Close() })
	if err := request(ctx, c, t.Agent.Secret, magic, req); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Read asks for a range of a file, and returns its bytes once the file
// server answered; an error it answers is returned as is, and a server that
// closes unanswered (older than the read stream) gives
// wire.ErrReadUnsupported. With Compress, the range is asked for
// zstd-compressed where that pays, and returned decoded.
func (t *Streams) Read(ctx context.Context, req wire.ReadRequest) (io.ReadCloser, error) {
	req.Zstd = t.Compress
	s, err := t.open(ctx, wire.ReadMagic, req)
	if err != nil {
		return nil, fmt.Errorf("read stream: %w", err)
	}
	// A big read into an empty bufio.Reader goes straight to its caller's
	// buffer: the body is not copied twice.
	s.r, err = readBody(bufio.NewReaderSize(s.Conn, 64<<10), req)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("read stream: %w", err)
	}
	return s, nil
}

// readBody reads a read stream's answer and returns its body: the range
// cut at the file's size as the server opened it, decoded if it came
// compressed. A stream that ends before (the port-forward or the server
// went away, which reads as a plain EOF) is an error, not the file's end.
func readBody(br *bufio.Reader, req wire.ReadRequest) (io.Reader, error) {
	var a wire.ReadAnswer
	if err := answered(br, wire.ErrReadUnsupported, &a); err != nil {
		return nil, err
	}
	if a.Error != "" {
		return nil, errors.New(a.Error)
	}
	left := max(0, min(req.Length, a.Size-req.Offset))
	switch a.Encoding {
	case "":
		return &exactly{r: br, left: left}, nil
	case wire.ReadZstd:
		dec, _ := readDecoders.Get().(*zstd.Decoder)
		if dec == nil {
			var err error
			if dec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
				zstd.WithDecoderMaxWindow(readMaxWindow)); err != nil {
				return nil, err
			}
		}
		if err := dec.Reset(br); err != nil {
			return nil, err
		}
		return &decoded{exactly: exactly{r: dec, left: left}, dec: dec}, nil
	}
	return nil, fmt.Errorf("the file server sent the range as %q, which this plugin cannot decode", a.Encoding)
}

// readDecoders keeps decoders of whole compressed ranges for the next ones
// (a new one is a few MiB of fresh memory per 8 MiB window). readMaxWindow
// bounds what one may hold: the file server's encoder uses zstd's fastest
// level, whose window is smaller.
var readDecoders sync.Pool

const readMaxWindow = 8 << 20

// decoded is a compressed range's body. Its decoder goes back to the pool
// once the whole range was read, by the reader itself: a Close from
// another goroutine (the stream's context ending) may come while a Read
// uses it, so a range not read to its end leaves its decoder to the
// collector.
type decoded struct {
	exactly
	dec *zstd.Decoder
}

func (d *decoded) Read(p []byte) (int, error) {
	n, err := d.exactly.Read(p)
	if d.left == 0 && d.dec != nil {
		readDecoders.Put(d.dec) // exactly never reads it again
		d.dec = nil
	}
	return n, err
}

// Writes opens the write stream of the existing file req names, and returns it
// once the file server answered: what follows are frames (fusefs writes
// them). ctx bounds the opening alone: the stream lasts as long as the
// file's handle. A file server that closes unanswered (older than the
// write stream) gives wire.ErrWriteUnsupported.
func (t *Streams) Writes(ctx context.Context, req wire.WriteRequest) (io.ReadWriteCloser, error) {
	s, err := t.open(ctx, wire.WriteMagic, req)
	if err != nil {
		return nil, fmt.Errorf("write stream: %w", err)
	}
	br := bufio.NewReaderSize(s.Conn, 4<<10)
	var a wire.WriteAck
	if err := answered(br, wire.ErrWriteUnsupported, &a); err != nil || a.Error != "" {
		s.Close()
		if err == nil {
			err = errors.New(a.Error)
		}
		return nil, fmt.Errorf("write stream: %w", err)
	}
	if !s.stop() { // ctx ended as it was answered: the stream is closed
		s.Close()
		return nil, fmt.Errorf("write stream: %w", context.Cause(ctx))
	}
	s.stop, s.r = nil, br
	return s, nil
}

// answered reads a stream's answer line into a; a file server that closes
// unanswered (older than the stream) gives unsupported.
func answered(br *bufio.Reader, unsupported error, a any) error {
	line, err := br.ReadSlice('\n')
	if errors.Is(err, io.EOF) {
		return unsupported
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(line, a); err != nil {
		return fmt.Errorf("answer: %w", err)
	}
	return nil
}

// exactly reads left bytes, then EOF; an EOF before is io.ErrUnexpectedEOF.
type exactly struct {
	r    io.Reader
	left int64
}

func (e *exactly) Read(p []byte) (int, error) {
	if e.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if errors.Is(err, io.EOF) && e.left > 0 {
		return n, io.ErrUnexpectedEOF
	}
	if e.left == 0 && err == nil {
		err = io.EOF
	}
	return n, err
}

// request starts a stream other than SFTP on a file server connection: the
// secret, the stream's magic byte, its request as one JSON line.
func request(ctx context.Context, c net.Conn, secret string, magic byte, req any) error {
	if err := present(ctx, c, secret); err != nil {
		return err
	}
	line, err := json.Marshal(req)
	if err != nil {
		return err
	}
	_, err = c.Write(append(append([]byte{magic}, line...), '\n'))
	return err
}

// dial opens a stream to the file server, on a new port-forward
// connection if the kept one is gone. Streams on the kept connection are
// opened outside the lock: a file's read windows open several at once,
// each a round trip.
func (t *Streams) dial(ctx context.Context) (net.Conn, error) {
	t.mu.Lock()
	pf := t.pf
	t.mu.Unlock()
	if pf != nil {
		c, err := pf.DialPort(ctx, t.Agent.Port)
		if err == nil {
			return c, nil
		}
		t.mu.Lock()
		if t.pf == pf { // not replaced meanwhile by another dial
			t.pf = nil
		}
		t.mu.Unlock()
		pf.Close()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pf == nil {
		pf, err := pfconn.Dial(ctx, t.Rest, t.Kube, t.NS, t.Pod)
		if err != nil {
			return nil, err
		}
		t.pf = pf
	}
	c, err := t.pf.DialPort(ctx, t.Agent.Port)
	if err != nil {
		t.pf.Close()
		t.pf = nil
		return nil, err
	}
	return c, nil
}

// Close ends the kept port-forward connection.
func (t *Streams) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pf != nil {
		t.pf.Close()
		t.pf = nil
	}
}

// stream is one tree, read or write stream's connection.
type stream struct {
	net.Conn
	r    io.Reader // the answer's reader, past its first line (read and write streams)
	stop func() bool
}

func (s *stream) Read(p []byte) (int, error) {
	if s.r != nil {
		return s.r.Read(p)
	}
	return s.Conn.Read(p)
}

func (s *stream) Close() error {
	if s.stop != nil {
		s.stop()
	}
	return s.Conn.Close()
}
