package files

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/kubectl-cz/kubectl-cz/agent/wire"
)

// ServeRead reads one wire.ReadRequest line from r and answers on c: the
// answer line, then the range's bytes. c is the accepted *net.TCPConn, so
// io.Copy from a limited *os.File is sendfile(2).
func ServeRead(r *bufio.Reader, c io.Writer) error {
	var req wire.ReadRequest
	if err := readRequest(r, &req); err != nil {
		return fmt.Errorf("read request: %w", err)
	}
	if err := req.Validate(); err != nil {
		return answerRead(c, wire.ReadAnswer{Error: err.Error()})
	}
	f, size, err := openRegular(req.Path)
	if err != nil {
		return answerRead(c, wire.ReadAnswer{Error: err.Error()})
	}
	defer f.Close()
	if err := answerRead(c, wire.ReadAnswer{Size: size}); err != nil {
		return err
	}
	if _, err := f.Seek(req.Offset, io.SeekStart); err != nil {
		return err
	}
	_, err = io.Copy(c, io.LimitReader(f, req.Length))
	return err
}

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
