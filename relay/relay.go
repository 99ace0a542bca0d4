// Package relay copies bytes both ways between two connections, as every
// relayed connection does, in the agent and on the laptop.
package relay

import (
	"io"
	"net"
	"sync"
)

// copyBuffers are large so a bulk transfer crosses the tunnel in few, big
// frames: on a busy node, per-frame CPU is what limits throughput.
var buffers = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// Pipe copies both ways between a and b, half-closing each side when the
// other ends, and closes both when both directions are done. It is used for
// every relayed connection, in the agent and on the laptop.
func Pipe(a, b io.ReadWriteCloser) {
	done := make(chan struct{}, 2)
	cp := func(dst, src io.ReadWriteCloser) {
		buf := buffers.Get().(*[]byte)
		// Plain Reader/Writer: keep io.Copy from choosing a ReaderFrom with
		// a small buffer of its own.
		_, _ = io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, *buf)
		buffers.Put(buf)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else if _, isTCP := dst.(*net.TCPConn); !isTCP {
			_ = dst.Close() // a yamux stream's Close is a half-close
		}
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	<-done
	a.Close()
	b.Close()
}

// Buffer lends one of Pipe's copy buffers (an HTTP/2 proxy's, say).
func Buffer() []byte { return *buffers.Get().(*[]byte) }

// Return gives a buffer from Buffer back.
func Return(b []byte) { buffers.Put(&b) }
