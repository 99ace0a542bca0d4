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
	fxpHandle   = 102
	fxpExtended = 200

	fxOK      = 0
	fxFailure = 4

	fsyncExtension = "fsync@openssh.com"
	// maxFilterPacket bounds what the filter reads of one packet: a data
	// packet of MaxPacket plus its header, with room to spare.
	maxFilterPacket = MaxPacket + 64<<10
)

// withFsync returns the end the SFTP server should serve; it pumps both
// ways until c or the server's end closes.
func withFsync(c net.Conn) net.Conn {
	server, inner := net.Pipe()
	f := &fsyncFilter{client: c, server: inner, opens: map[uint32]string{}, handles: map[string]string{}}
	go f.pump(c, inner, f.fromClient)
	go f.pump(inner, c, f.fromServer)
	return server
}

type fsyncFilter struct {
	client, server net.Conn
	toClient       sync.Mutex // the server's answers and ours, whole packets
	mu             sync.Mutex
	opens          map[uint32]string // request id -> path, until its HANDLE
	handles        map[string]string // handle -> path
}

// pump copies packets from src to dst through handle, which may answer a
// packet itself (then it is not forwarded) or change it.
func (f *fsyncFilter) pump(src, dst net.Conn, handle func(p []byte) ([]byte, bool)) {
	defer src.Close()
	defer dst.Close()
	r := bufio.NewReaderSize(src, 64<<10)
	for {
		p, err := readPacket(r)
		if err != nil {
			return
		}
		out, forward := handle(p)
		if !forward {
			continue
		}
		if dst == f.client {
			f.toClient.Lock()
		}
		_, err = dst.Write(out)
		if dst == f.client {
			f.toClient.Unlock()
		}
		if err != nil {
			return
		}
	}
}

// readPacket reads one length-prefixed packet, prefix included.
func readPacket(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > maxFilterPacket {
		return nil, fmt.Errorf("sftp packet of %d bytes", n)
	}
	p := make([]byte, 4+n)
	copy(p, hdr[:])
	if _, err := io.ReadFull(r, p[4:]); err != nil {
		return nil, err
	}
	return p, nil
}

func (f *fsyncFilter) fromClient(p []byte) ([]byte, bool) {
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
		return nil, false
	}
	return p, true
}

func (f *fsyncFilter) fromServer(p []byte) ([]byte, bool) {
	switch p[4] {
	case fxpVersion:
		// Advertise the extension: name and version "1", appended.
		ext := appendString(appendString(nil, fsyncExtension), "1")
		out := append(append([]byte{}, p...), ext...)
		binary.BigEndian.PutUint32(out, uint32(len(out)-4))
		return out, true
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
	return p, true
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
