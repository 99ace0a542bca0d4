package files

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
)

// pkg/sftp's server has no fsync@openssh.com, so a laptop's fsync(2) could
// not reach the pod's disk. withFsync sits between the connection and the
// server and answers that one request itself: it learns each handle's path
// from OPEN and its HANDLE answer, advertises the extension in VERSION, and
// fsyncs the file by path (on Linux any descriptor of a file flushes its
// dirty pages). Everything else passes through, packet by packet. This is
// hand-rolled for correctness: the library offers no hook for it.

const (
	fxpInit     = 1
	fxpVersion  = 2
	fxpOpen     = 3
	fxpClose    = 4
	fxpStatus   = 101
	fxpData     = 103
	fxpHandle   = 102
	fxpExtended = 200

	fxOK      = 0
	fxFailure = 4

	fsyncExtension = "fsync@openssh.com"
	// maxFilterPacket bounds what the filter reads of one packet: a data
	// packet of MaxPacket plus its header, with room to spare.
	maxFilterPacket = MaxPacket + 64<<10
)

// withFsync returns what the SFTP server should serve: its reads come,
// packet by packet, from the client through the filter (a pipe); its
// writes go straight to the client, looked at on the way (no copy: the
// answers carry the data of every read).
func withFsync(c net.Conn) io.ReadWriteCloser {
	// c may be a bufferedConn: its reads carry the peeked bytes.
	pr, pw := io.Pipe()
	f := &fsyncFilter{client: c, opens: map[uint32]string{}, handles: map[string]string{}}
	go f.pumpRequests(c, pw)
	return &serverEnd{f: f, r: pr}
}

type fsyncFilter struct {
	client   net.Conn
	toClient sync.Mutex // held from the start of a server packet to its end, and for our answers
	mu       sync.Mutex
	opens    map[uint32]string // request id -> path, until its HANDLE
	handles  map[string]string // handle -> path

	// The server's packet being written: bytes still to come, and a small
	// packet gathered whole before it is looked at.
	left    int
	partial []byte
}

// pumpRequests passes the client's packets to the server, answering an
// fsync itself.
func (f *fsyncFilter) pumpRequests(c net.Conn, w *io.PipeWriter) {
	r := bufio.NewReaderSize(c, 64<<10)
	var buf []byte // reused: the pipe's Write returns once the server read it all
	for {
		p, err := readPacket(r, buf)
		buf = p
		if err != nil {
			w.CloseWithError(err)
			return
		}
		if forward := f.fromClient(p); !forward {
			continue
		}
		if _, err := w.Write(p); err != nil {
			c.Close()
			return
		}
	}
}

// serverEnd is the server's connection: reads from the pipe, writes to the
// client through fromServer.
type serverEnd struct {
	f *fsyncFilter
	r *io.PipeReader
}

func (s *serverEnd) Read(p []byte) (int, error)  { return s.r.Read(p) }
func (s *serverEnd) Write(p []byte) (int, error) { return s.f.fromServer(p) }
func (s *serverEnd) Close() error {
	s.r.Close()
	return s.f.client.Close()
}

// readPacket reads one length-prefixed packet, prefix included, into buf
// when it is big enough.
func readPacket(r io.Reader, buf []byte) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > maxFilterPacket {
		return nil, fmt.Errorf("sftp packet of %d bytes", n)
	}
	p := buf[:0]
	if cap(p) < int(4+n) {
		p = make([]byte, 4+n)
	}
	p = p[:4+n]
	copy(p, hdr[:])
	if _, err := io.ReadFull(r, p[4:]); err != nil {
		return nil, err
	}
	return p, nil
}

func (f *fsyncFilter) fromClient(p []byte) bool {
	body := p[5:]
	switch p[4] {
	case fxpOpen:
		if id, rest, ok := takeUint32(body); ok {
			if name, _, ok := takeString(rest); ok {
				f.mu.Lock()
				f.opens[id] = name
				f.mu.Unlock()
			}
		}
	case fxpClose:
		if _, rest, ok := takeUint32(body); ok {
			if h, _, ok := takeString(rest); ok {
				f.mu.Lock()
				delete(f.handles, h)
				f.mu.Unlock()
			}
		}
	case fxpExtended:
		id, rest, ok := takeUint32(body)
		if !ok {
			break
		}
		req, rest, ok := takeString(rest)
		if !ok || req != fsyncExtension {
			break
		}
		h, _, _ := takeString(rest)
		f.mu.Lock()
		path, known := f.handles[h]
		f.mu.Unlock()
		code, msg := uint32(fxOK), ""
		if err := fsyncPath(path, known); err != nil {
			code, msg = fxFailure, err.Error()
		}
		f.toClient.Lock()
		_, _ = f.client.Write(statusPacket(id, code, msg))
		f.toClient.Unlock()
		return false
	}
	return true
}

// fromServer writes the server's bytes to the client. pkg/sftp writes a
// packet as its header, then the payload of a data answer: the client lock
// is taken at a packet's first byte and let go at its last, so our answers
// never land inside one. Small packets (VERSION, HANDLE, STATUS) are
// gathered whole and looked at; a data answer passes as it comes.
func (f *fsyncFilter) fromServer(p []byte) (int, error) {
	written := len(p)
	for len(p) > 0 {
		if f.left == 0 && f.partial == nil {
			f.toClient.Lock() // a packet starts
		}
		if f.left > 0 { // inside a data answer
			n := min(f.left, len(p))
			if _, err := f.client.Write(p[:n]); err != nil {
				f.left = 0
				f.toClient.Unlock()
				return 0, err
			}
			f.left -= n
			p = p[n:]
			if f.left == 0 {
				f.toClient.Unlock()
			}
			continue
		}
		f.partial = append(f.partial, p...)
		p = nil
		if len(f.partial) < 5 {
			return written, nil // the rest of the header comes next
		}
		size := 4 + int(binary.BigEndian.Uint32(f.partial))
		if f.partial[4] == fxpData && len(f.partial) < size {
			// A data answer's header: send it, then its payload as it comes.
			head := f.partial
			f.partial, f.left = nil, size-len(head)
			if _, err := f.client.Write(head); err != nil {
				f.left = 0
				f.toClient.Unlock()
				return 0, err
			}
			continue
		}
		if len(f.partial) < size {
			if size > maxFilterPacket {
				f.toClient.Unlock()
				return 0, fmt.Errorf("sftp answer of %d bytes", size)
			}
			return written, nil // gather the small packet whole
		}
		pkt, rest := f.partial[:size], f.partial[size:]
		f.partial = nil
		_, err := f.client.Write(f.look(pkt))
		f.toClient.Unlock()
		if err != nil {
			return 0, err
		}
		p = rest
	}
	return written, nil
}

// look notes what the filter needs of a whole server packet, and adds the
// extension to VERSION.
func (f *fsyncFilter) look(p []byte) []byte {
	switch p[4] {
	case fxpVersion:
		// Advertise the extension: name and version "1", appended.
		ext := appendString(appendString(nil, fsyncExtension), "1")
		out := append(append([]byte{}, p...), ext...)
		binary.BigEndian.PutUint32(out, uint32(len(out)-4))
		return out
	case fxpHandle:
		if id, rest, ok := takeUint32(p[5:]); ok {
			if h, _, ok := takeString(rest); ok {
				f.mu.Lock()
				if name, pending := f.opens[id]; pending {
					f.handles[h] = name
					delete(f.opens, id)
				}
				f.mu.Unlock()
			}
		}
	case fxpStatus:
		// A failed OPEN: forget it.
		if id, _, ok := takeUint32(p[5:]); ok {
			f.mu.Lock()
			delete(f.opens, id)
			f.mu.Unlock()
		}
	}
	return p
}

func fsyncPath(path string, known bool) error {
	if !known {
		return errors.New("fsync of a handle this server did not open")
	}
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	defer file.Close()
	return file.Sync()
}

func takeUint32(b []byte) (uint32, []byte, bool) {
	if len(b) < 4 {
		return 0, nil, false
	}
	return binary.BigEndian.Uint32(b), b[4:], true
}

func takeString(b []byte) (string, []byte, bool) {
	n, rest, ok := takeUint32(b)
	if !ok || uint32(len(rest)) < n {
		return "", nil, false
	}
	return string(rest[:n]), rest[n:], true
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// statusPacket is SSH_FXP_STATUS: id, code, message, language tag.
func statusPacket(id, code uint32, msg string) []byte {
	body := []byte{fxpStatus}
	body = binary.BigEndian.AppendUint32(body, id)
	body = binary.BigEndian.AppendUint32(body, code)
	body = appendString(body, msg)
	body = appendString(body, "")
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}
