//go:build !linux

package sandbox

import (
	"context"
	"errors"
	"net"
	"os"
	"runtime"
)

// Sandbox needs Linux's namespaces.
type Sandbox struct{}

var errPlatform = errors.New("kubectl cz run needs Linux (network, mount and user namespaces), which " + runtime.GOOS + " is not: use kubectl cz teleport, or run it in a Linux VM")

func Supported() error                                         { return errPlatform }
func Start() (*Sandbox, error)                                 { return nil, errPlatform }
func IsInit() bool                                             { return false }
func Init() int                                                { return 125 }
func (s *Sandbox) AddAddress(net.IP) error                     { return errPlatform }
func (s *Sandbox) RemoveAddress(net.IP) error                  { return errPlatform }
func (s *Sandbox) Listen(string) (net.Listener, error)         { return nil, errPlatform }
func (s *Sandbox) ListenPacket(string) (net.PacketConn, error) { return nil, errPlatform }
func (s *Sandbox) Dial(context.Context, string) (net.Conn, error) {
	return nil, errPlatform
}
func (s *Sandbox) SetResolvConf([]byte) error               { return errPlatform }
func (s *Sandbox) Run(argv, env []string, dir string) error { return errPlatform }
func (s *Sandbox) RelaySignals(func(os.Signal))             {}
func (s *Sandbox) Wait(context.Context) (int, error)        { return 0, errPlatform }
func (s *Sandbox) Done() <-chan struct{}                    { return nil }
func (s *Sandbox) Signal(os.Signal) error                   { return errPlatform }
func (s *Sandbox) Close() error                             { return nil }
