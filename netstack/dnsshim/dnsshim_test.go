package dnsshim

import (
	"context"
	"net"
	"testing"

	"github.com/miekg/dns"
)

// serve starts a shim on a free loopback port and returns its address.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	for attempt := 0; attempt < 5; attempt++ {
		l, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.LocalAddr().String()
		l.Close()
		ctx, cancel := context.WithCancel(context.Background())
		ready := make(chan struct{})
		errc := make(chan error, 1)
		go func() { errc <- s.ListenAndServe(ctx, addr, func() { close(ready) }) }()
		select {
		case <-ready:
			t.Cleanup(cancel)
			return addr
		case <-errc:
			cancel() // the port was taken meanwhile: try another
		}
	}
	t.Fatal("no free port")
	return ""
}

func query(t *testing.T, addr, name string, qtype uint16, network string) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	resp, _, err := (&dns.Client{Net: network}).Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s %s: %v", name, dns.TypeToString[qtype], err)
	}
	return resp
}

func TestClusterNamesAndForwarding(t *testing.T) {
	// An upstream resolver that knows one outside name.
	up := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if r.Question[0].Name == "example.test." {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: "example.test.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 7)})
		}
		_ = w.WriteMsg(m)
	})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	upSrv := &dns.Server{PacketConn: pc, Handler: up}
	go upSrv.ActivateAndServe()
	defer upSrv.Shutdown()

	s := &Server{Upstreams: []string{pc.LocalAddr().String()}}
	s.Set("shop", []Service{
		{Name: "core", Namespace: "shop", IPs: []net.IP{net.ParseIP("10.96.0.20")}, Ports: []Port{{Name: "http", Protocol: "tcp", Port: 80}}},
		{Name: "core", Namespace: "other", IPs: []net.IP{net.ParseIP("10.96.0.30")}},
		{Name: "db", Namespace: "shop", IPs: []net.IP{net.ParseIP("127.241.0.1"), net.ParseIP("127.241.0.2")},
			Pods: map[string]net.IP{"db-0": net.ParseIP("127.241.0.1"), "db-1": net.ParseIP("127.241.0.2")}},
	})
	addr := serve(t, s)

	a := func(name string) []string {
		var ips []string
		for _, rr := range query(t, addr, name, dns.TypeA, "udp").Answer {
			ips = append(ips, rr.(*dns.A).A.String())
		}
		return ips
	}
	for name, want := range map[string]string{
		"core.":                           "10.96.0.20",
		"CORE.shop.":                      "10.96.0.20",
		"core.shop.svc.":                  "10.96.0.20",
		"core.shop.svc.cluster.local.":    "10.96.0.20",
		"core.other.":                     "10.96.0.30",
		"db-1.db.shop.svc.cluster.local.": "127.241.0.2",
		"example.test.":                   "192.0.2.7",
	} {
		if got := a(name); len(got) != 1 || got[0] != want {
			t.Errorf("%s: %v, want %s", name, got, want)
		}
	}
	if got := a("db.shop.svc.cluster.local."); len(got) != 2 {
		t.Errorf("headless service: %v", got)
	}
	srv := query(t, addr, "_http._tcp.core.shop.svc.cluster.local.", dns.TypeSRV, "tcp")
	if len(srv.Answer) != 1 || srv.Answer[0].(*dns.SRV).Port != 80 {
		t.Errorf("SRV: %v", srv.Answer)
	}
	if r := query(t, addr, "nope.shop.svc.cluster.local.", dns.TypeA, "udp"); r.Rcode != dns.RcodeNameError {
		t.Errorf("unknown cluster name: rcode %s", dns.RcodeToString[r.Rcode])
	}
	if r := query(t, addr, "core.shop.", dns.TypeAAAA, "udp"); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Errorf("AAAA of a known name: %s %v", dns.RcodeToString[r.Rcode], r.Answer)
	}
	// Records can change while serving.
	s.Set("shop", nil)
	if got := a("core."); len(got) != 0 {
		t.Errorf("after Set(nil): %v", got)
	}
}
