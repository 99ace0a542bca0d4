// Package dnsshim answers cluster DNS names on the laptop during a teleport:
// svc, svc.ns, svc.ns.svc and svc.ns.svc.cluster.local, pod names of
// headless Services, and SRV records of named ports, with the addresses
// teleport gave them; every other name goes to the resolvers the machine
// had before.
package dnsshim

import (
	"context"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Port is a named port of a Service, for SRV records.
type Port struct {
	Name     string
	Protocol string // "tcp" or "udp"
	Port     int
}

// Service is what the shim knows of one Service.
type Service struct {
	Name, Namespace string
	IPs             []net.IP // the ClusterIP's stand-in, or every pod's for a headless Service
	Ports           []Port
	// Pods of a headless Service by hostname (db-0.db.ns.svc.cluster.local).
	Pods map[string]net.IP
}

// Server is the DNS shim. Set replaces its records while it serves.
type Server struct {
	// Domain is the cluster's DNS domain, "cluster.local" if empty.
	Domain string
	// Upstreams answer every other name, tried in order ("host:port").
	Upstreams []string

	mu sync.RWMutex
	// peers are the upstreams that are another teleport's shim: asked for
	// cluster names this one does not know.
	peers   []string
	a       map[string][]net.IP
	srv     map[string][]*dns.SRV
	primary string
}

// PeerNet holds every shim's address: an upstream in it is another
// teleport's shim.
var PeerNet = net.IPNet{IP: net.IPv4(127, 0, 21, 0), Mask: net.CIDRMask(24, 32)}

// SetUpstreams replaces the upstreams while the shim serves.
func (s *Server) SetUpstreams(upstreams []string) {
	var peers []string
	for _, up := range upstreams {
		if host, _, err := net.SplitHostPort(up); err == nil && PeerNet.Contains(net.ParseIP(host)) {
			peers = append(peers, up)
		}
	}
	s.mu.Lock()
	s.Upstreams, s.peers = upstreams, peers
	s.mu.Unlock()
}

// Set replaces the records. Short names (svc) are those of the primary
// namespace.
func (s *Server) Set(primary string, services []Service) {
	domain := s.domain()
	a := map[string][]net.IP{}
	srv := map[string][]*dns.SRV{}
	for _, svc := range services {
		full := svc.Name + "." + svc.Namespace + ".svc." + domain + "."
		names := []string{full, svc.Name + "." + svc.Namespace + ".svc.", svc.Name + "." + svc.Namespace + "."}
		if svc.Namespace == primary {
			names = append(names, svc.Name+".")
		}
		for _, n := range names {
			a[n] = svc.IPs
		}
		for host, ip := range svc.Pods {
			a[host+"."+full] = []net.IP{ip}
		}
		for _, p := range svc.Ports {
			if p.Name == "" {
				continue
			}
			key := "_" + p.Name + "._" + p.Protocol + "." + full
			srv[key] = append(srv[key], &dns.SRV{Priority: 0, Weight: 100, Port: uint16(p.Port), Target: full})
		}
	}
	s.mu.Lock()
	s.a, s.srv, s.primary = a, srv, primary
	s.mu.Unlock()
}

func (s *Server) inDomain(name string) bool { return strings.HasSuffix(name, "."+s.domain()+".") }

func (s *Server) domain() string {
	if s.Domain == "" {
		return "cluster.local"
	}
	return strings.Trim(s.Domain, ".")
}

// ListenAndServe answers on addr over UDP and TCP until ctx ends. ready,
// if not nil, is called once both listen.
func (s *Server) ListenAndServe(ctx context.Context, addr string, ready func()) error {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		pc.Close()
		return err
	}
	return s.Serve(ctx, pc, l, ready)
}

// Serve answers on pc (UDP) and l (TCP) until ctx ends; a sandbox's
// sockets are made there and served here.
func (s *Server) Serve(ctx context.Context, pc net.PacketConn, l net.Listener, ready func()) error {
	udp := &dns.Server{PacketConn: pc, Handler: s}
	tcp := &dns.Server{Listener: l, Handler: s}
	errc := make(chan error, 2)
	go func() { errc <- udp.ActivateAndServe() }()
	go func() { errc <- tcp.ActivateAndServe() }()
	if ready != nil {
		ready()
	}
	select {
	case <-ctx.Done():
		_ = udp.Shutdown()
		_ = tcp.Shutdown()
		return nil
	case err := <-errc:
		_ = udp.Shutdown()
		_ = tcp.Shutdown()
		return err
	}
}

// ServeDNS answers one query.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeFormatError)
		_ = w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	m, ours := s.answer(req, name, q.Qtype)
	if !ours {
		s.mu.RLock()
		ups, peers := s.Upstreams, s.peers
		s.mu.RUnlock()
		if s.inDomain(name) {
			// A cluster name another teleport may know; never the
			// laptop's own resolvers.
			if m = s.forward(req, w.RemoteAddr().Network(), peers); m.Rcode == dns.RcodeServerFailure {
				m = new(dns.Msg)
				m.SetRcode(req, dns.RcodeNameError)
				m.Authoritative = true
			}
		} else {
			m = s.forward(req, w.RemoteAddr().Network(), ups)
		}
	}
	_ = w.WriteMsg(m)
}

// answer is the shim's own answer, if the name is its to answer.
func (s *Server) answer(req *dns.Msg, name string, qtype uint16) (*dns.Msg, bool) {
	s.mu.RLock()
	ips, known := s.a[name]
	srvs := s.srv[name]
	peers := len(s.peers) > 0
	s.mu.RUnlock()
	if !known && len(srvs) == 0 && (!s.inDomain(name) || peers) {
		return nil, false
	}
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: req.Question[0].Name, Rrtype: t, Class: dns.ClassINET, Ttl: 5}
	}
	switch {
	case known && (qtype == dns.TypeA || qtype == dns.TypeANY):
		for _, ip := range ips {
			if v4 := ip.To4(); v4 != nil {
				m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: v4})
			}
		}
	case len(srvs) > 0 && qtype == dns.TypeSRV:
		for _, r := range srvs {
			rr := *r
			rr.Hdr = hdr(dns.TypeSRV)
			m.Answer = append(m.Answer, &rr)
		}
	case known || len(srvs) > 0:
		// The name exists, with no record of that type (AAAA): NODATA.
	default:
		// A cluster name teleport does not know, as the cluster's DNS says.
		m.SetRcode(req, dns.RcodeNameError)
		m.Authoritative = true
	}
	return m, true
}

// forward asks the upstream resolvers; SERVFAIL when none answers.
func (s *Server) forward(req *dns.Msg, network string, upstreams []string) *dns.Msg {
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	if network == "tcp" {
		c.Net = "tcp"
	}
	for _, up := range upstreams {
		resp, _, err := c.Exchange(req, up)
		if err == nil && resp.Truncated && c.Net == "udp" {
			resp, _, err = (&dns.Client{Net: "tcp", Timeout: 2 * time.Second}).Exchange(req, up)
		}
		if err == nil {
			return resp
		}
	}
	m := new(dns.Msg)
	m.SetRcode(req, dns.RcodeServerFailure)
	return m
}
