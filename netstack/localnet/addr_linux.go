package localnet

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/vishvananda/netlink"
)

// Addresses through netlink (Linux).

func snapshot() (*Host, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list this machine's addresses: %w", err)
	}
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list this machine's routes: %w", err)
	}
	h := &Host{addrs: map[string]bool{}}
	for _, a := range addrs {
		h.addrs[a.IP.String()] = true
	}
	for _, r := range routes {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones > 0 {
				h.routes = append(h.routes, r.Dst)
			}
		}
	}
	return h, nil
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
