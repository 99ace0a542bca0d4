package fusefs

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"unicode/utf8"

	"github.com/klauspost/compress/zstd"

	"github.com/kubectl-cz/kubectl-cz/agent/wire"
)

// StreamWriter is a Remote whose file server takes a file's writes on a
// stream of their own (package wire's write stream): frames the pod
// answers in order, zstd-compressed where that pays, instead of SFTP's
// request and answer per 128 KiB.
type StreamWriter interface {
	// OpenWrites opens the write stream of the existing file req names
	// (if it is still the one the laptop opened); what it returns has been
	// answered, and takes frames.
	OpenWrites(ctx context.Context, req wire.WriteRequest) (io.ReadWriteCloser, error)
}

// writeStream sends one open file's writes as frames and tells each its
// answer. Frames go one at a time (send); the answers come in the order
// the frames went, so each is matched with the oldest waiting (queue).
type writeStream struct {
	conn io.ReadWriteCloser
	send sync.Mutex

	mu    sync.Mutex
	queue []func(error)
	err   error // the stream failed: every frame gets this
}

func newWriteStream(c io.ReadWriteCloser) *writeStream {
	ws := &writeStream{conn: c}
	go ws.answers()
	return ws
}

// write sends data for off and tells done the pod's answer, once.
func (ws *writeStream) write(data []byte, off int64, done func(error)) {
	payload, enc := encodeWrite(data)
	hdr := wire.WriteFrame{Offset: off, Length: uint32(len(data)), WireLength: uint32(len(payload)), Encoding: enc}.Marshal()
	ws.send.Lock()
	defer ws.send.Unlock()
	ws.mu.Lock()
	if err := ws.err; err != nil {
		ws.mu.Unlock()
		done(err)
		return
	}
	ws.queue = append(ws.queue, done) // before the frame goes: its answer may come at once
	ws.mu.Unlock()
	if _, err := ws.conn.Write(hdr[:]); err != nil {
		ws.conn.Close() // answers() fails what waits
		return
	}
	if _, err := ws.conn.Write(payload); err != nil {
		ws.conn.Close()
	}
}

// answers hands each answer to its frame, and on the stream's end fails
// every frame still waiting, and every later one.
func (ws *writeStream) answers() {
	r := bufio.NewReader(ws.conn)
	var end error
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			end = fmt.Errorf("write stream: %w", err)
			if errors.Is(err, io.EOF) {
				end = errors.New("write stream: the file server hung up")
			}
			break
		}
		var a wire.WriteAck
		if err := json.Unmarshal(line, &a); err != nil {
			end = fmt.Errorf("write stream answer: %w", err)
			break
		}
		ws.mu.Lock()
		if len(ws.queue) == 0 {
			ws.mu.Unlock()
			end = errors.New("write stream: an answer for no frame")
			break
		}
		done := ws.queue[0]
		ws.queue = ws.queue[1:]
		ws.mu.Unlock()
		var ferr error
		if a.Error != "" {
			ferr = errors.New(a.Error)
		}
		done(ferr)
	}
	ws.conn.Close()
	ws.mu.Lock()
	ws.err = end
	waiting := ws.queue
	ws.queue = nil
	ws.mu.Unlock()
	for _, done := range waiting {
		done(end)
	}
}

// close ends the stream once its frames were answered (the caller waited
// for them).
func (ws *writeStream) close() { ws.conn.Close() }

// failed says the stream ended: its frames got its error, later writes go
// another way.
func (ws *writeStream) failed() bool {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return ws.err != nil
}

// streamable says whether a file's writes may go on a write stream: its
// request is one JSON line the file server bounds (4 KiB), and JSON would
// change a name that is not UTF-8.
func streamable(p string) bool { return len(p) <= 3<<10 && utf8.ValidString(p) }

// compressor is shared by every write stream (EncodeAll is safe for
// concurrent use, as many at once as there are CPUs).
var compressor, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest),
	zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)), zstd.WithLowerEncoderMem(true))

// encodeWrite is a frame's bytes: zstd where that pays (text, source,
// build outputs: wire.Shrinks, after a sample for a big frame), else as
// they are.
func encodeWrite(data []byte) ([]byte, byte) {
	if len(data) < 512 {
		return data, wire.WriteRaw
	}
	if len(data) > 4*wire.ZstdSample {
		sample := data[:wire.ZstdSample]
		if z := compressor.EncodeAll(sample, make([]byte, 0, len(sample))); !wire.Shrinks(len(sample), len(z)) {
			return data, wire.WriteRaw
		}
	}
	if z := compressor.EncodeAll(data, make([]byte, 0, len(data)/2)); wire.Shrinks(len(data), len(z)) {
		return z, wire.WriteZstd
	}
	return data, wire.WriteRaw
}
