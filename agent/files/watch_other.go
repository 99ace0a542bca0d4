//go:build !linux

package files

import (
	"bufio"
	"errors"
	"net"
)

// serveWatch needs inotify: the agent runs in Linux pods; this is for
// builds of the laptop side on other systems.
func serveWatch(c net.Conn, _ *bufio.Reader) error {
	c.Close()
	return errors.New("the change stream needs Linux (inotify)")
}
