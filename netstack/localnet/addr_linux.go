package localnet

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/vishvananda/netlink"
)

// Addresses through netlink (Linux).

func taken(ip net.IP) (bool, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return false, fmt.Errorf("list this machine's addresses: %w", err)
	}
	for _, a := range addrs {
		if a.IP.Equal(ip) {
			return true, nil
		}
	}
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return false, fmt.Errorf("list this machine's routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst != nil && r.Dst.Contains(ip) {
			if ones, _ := r.Dst.Mask.Size(); ones > 0 {
				return true, nil
			}
		}
	}
	return false, nil
}

func linkExists(name string) error {
	if _, err := netlink.LinkByName(name); err != nil {
		return fmt.Errorf("find interface %s: %w", name, err)
	}
	return nil
}

func addrAdd(link string, ip net.IP) error {
	l, err := netlink.LinkByName(link)
	if err != nil {
		return fmt.Errorf("find interface %s: %w", link, err)
	}
	return netlink.AddrAdd(l, hostAddr(ip))
}

// addrDel removes ip from link; an address already gone is no error.
func addrDel(link string, ip net.IP) error {
	l, err := netlink.LinkByName(link)
	if err != nil {
		return fmt.Errorf("find interface %s: %w", link, err)
	}
	if err := netlink.AddrDel(l, hostAddr(ip)); err != nil && !errors.Is(err, syscall.EADDRNOTAVAIL) {
		return err
	}
	return nil
}

func hostAddr(ip net.IP) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: ip.To4(), Mask: net.CIDRMask(32, 32)}, Scope: int(netlink.SCOPE_HOST)}
}
