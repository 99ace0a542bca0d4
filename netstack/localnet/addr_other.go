//go:build !linux

package localnet

import (
	"errors"
	"net"
)

// errNotLinux: teleport puts addresses on the loopback interface through
// netlink, which only Linux has.
var errNotLinux = errors.New("teleport needs Linux (it adds addresses through netlink): on this system use kubectl port-forward")

func snapshot() (*Host, error)     { return nil, errNotLinux }
func linkExists(string) error      { return errNotLinux }
func addrAdd(string, net.IP) error { return errNotLinux }
func addrDel(string, net.IP) error { return errNotLinux }
