// Package teleport makes the laptop behave as if it were inside the
// cluster: every Service of the teleported namespaces gets a local address
// (its own ClusterIP where that clashes with nothing here) and listeners on
// its ports; each accepted connection goes, over port-forward, to a ready
// pod picked from the Service's EndpointSlices at that moment; a DNS shim
// answers the cluster names. Every change to the laptop is journaled in the
// session first (package localnet).
package teleport

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/kubectl-cz/kubectl-cz/netstack/dnsshim"
	"github.com/kubectl-cz/kubectl-cz/netstack/localnet"
	"github.com/kubectl-cz/kubectl-cz/pfconn"
	"github.com/kubectl-cz/kubectl-cz/relay"
	"github.com/kubectl-cz/kubectl-cz/session"
)

// DNS integration modes.
const (
	DNSAuto       = "auto"
	DNSResolvConf = "resolvconf"
	DNSHosts      = "hosts"
	DNSNone       = "none"
)

// Config is one teleport.
type Config struct {
	Namespaces []string // the first one's Services also answer to their bare name
	// Exclude lists Services to leave out, as "name" or "namespace/name".
	Exclude []string
	DNS     string
	Kube    kubernetes.Interface
	Rest    *rest.Config
	Session *session.Session
	// Log gets progress and changes, one line each.
	Log io.Writer
	// DNSAddr is where the shim answers (default 127.0.21.53:53).
	DNSAddr string
	// ResolvConf and Hosts are the files the DNS modes change (defaults
	// /etc/resolv.conf and /etc/hosts).
	ResolvConf, Hosts string
	// Ready, if set, is called once every Service is reachable.
	Ready func()
	// Domain is the cluster's DNS domain (default: ClusterDomain's answer).
	Domain string
	// Sandbox, if set, is a network of one process's own (kubectl cz run):
	// the addresses, listeners and shim go there and its resolver points at
	// the shim, and this machine is left alone (DNS is then ignored).
	Sandbox Network
}

// Network is a process's own network that teleport fills instead of this
// machine's (package sandbox).
type Network interface {
	AddAddress(ip net.IP) error
	RemoveAddress(ip net.IP) error
	Listen(addr string) (net.Listener, error)
	ListenPacket(addr string) (net.PacketConn, error)
	SetResolvConf(content []byte) error
}

// fallbackBase is where Services whose ClusterIP clashes with this
// machine's networks, and pods of headless Services, get addresses: all of
// 127/8 is already local, so no address has to be added for them.
var fallbackBase = net.IPv4(127, 241, 0, 0)

type teleport struct {
	cfg     Config
	dns     *dnsshim.Server
	fwd     *forwarder
	svcs    map[string]listersv1.ServiceLister
	slices  map[string]discoverylisters.EndpointSliceLister
	bySvc   map[string]cache.Indexer // EndpointSlices by Service name, per namespace
	exposed map[string]*exposure     // by "ns/name", or "ns/name/pod" for a pod of a headless Service
	nextIP  uint32
	ips     map[string]net.IP // fallback addresses handed out, by key
	hosts   []string          // the last /etc/hosts block written
	batched map[string]error  // ClusterIPs added by this pass's addBatch, with their errors
}

// exposure is one address with its listeners.
type exposure struct {
	ip        net.IP
	added     bool // an address teleport put on the interface
	listeners map[int]net.Listener
	rr        atomic.Uint64
}

// Run teleports until ctx ends, then closes its listeners; the caller
// closes the session, which undoes the changes to the laptop.
func Run(ctx context.Context, cfg Config) error {
	if cfg.ResolvConf == "" {
		cfg.ResolvConf = "/etc/resolv.conf"
	}
	if cfg.Hosts == "" {
		cfg.Hosts = "/etc/hosts"
	}
	if cfg.DNS == "" || cfg.DNS == DNSAuto {
		cfg.DNS = DNSResolvConf // systemd-resolved's per-link DNS is not used yet
	}
	if cfg.Domain == "" {
		cfg.Domain = ClusterDomain(ctx, cfg.Kube)
	}
	t := &teleport{cfg: cfg, dns: &dnsshim.Server{Domain: cfg.Domain}, fwd: &forwarder{rest: cfg.Rest, kube: cfg.Kube, conns: map[string]*pfconn.Conn{}, spares: map[string]*sparePool{}},
		svcs: map[string]listersv1.ServiceLister{}, slices: map[string]discoverylisters.EndpointSliceLister{}, bySvc: map[string]cache.Indexer{},
		exposed: map[string]*exposure{}, ips: map[string]net.IP{}}
	defer t.fwd.closeAll()
	defer t.closeAll()

	changed := make(chan struct{}, 1)
	notify := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { notify() },
		UpdateFunc: func(any, any) { notify() },
		DeleteFunc: func(any) { notify() },
	}
	var synced []cache.InformerSynced
	for _, ns := range cfg.Namespaces {
		f := informers.NewSharedInformerFactoryWithOptions(cfg.Kube, 0, informers.WithNamespace(ns))
		si, ei := f.Core().V1().Services(), f.Discovery().V1().EndpointSlices()
		if _, err := si.Informer().AddEventHandler(handler); err != nil {
			return err
		}
		if _, err := ei.Informer().AddEventHandler(handler); err != nil {
			return err
		}
		// Every accepted connection looks up its Service's slices: by index,
		// not by scanning the namespace's.
		if err := ei.Informer().AddIndexers(cache.Indexers{serviceIndex: func(obj any) ([]string, error) {
			if es, ok := obj.(*discoveryv1.EndpointSlice); ok {
				return []string{es.Labels[discoveryv1.LabelServiceName]}, nil
			}
			return nil, nil
		}}); err != nil {
			return err
		}
		t.svcs[ns], t.slices[ns], t.bySvc[ns] = si.Lister(), ei.Lister(), ei.Informer().GetIndexer()
		synced = append(synced, si.Informer().HasSynced, ei.Informer().HasSynced)
		f.Start(ctx.Done())
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return ctx.Err()
	}
	if err := t.reconcile(ctx); err != nil {
		return err
	}
	if err := t.startDNS(ctx); err != nil {
		return err
	}
	// Active means traffic flows: one Service's tunnel is opened to a
	// ready pod through the API server and the kubelet before saying so.
	if err := t.prove(ctx); err != nil {
		return err
	}
	if cfg.Ready != nil {
		cfg.Ready()
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
			// Let a burst of events (a rollout) settle into one pass.
			time.Sleep(100 * time.Millisecond)
			if err := t.reconcile(ctx); err != nil {
				fmt.Fprintf(cfg.Log, "warning: %v\n", err)
			}
		}
	}
}

// prove opens a stream to a ready pod of the first Service that has one,
// the way every connection will go (port-forward through the API server
// and the kubelet, which reports a port nothing listens on), so "active"
// is said only when that path works. Namespaces without a ready pod have
// nothing to prove.
func (t *teleport) prove(ctx context.Context) error {
	for _, ns := range t.cfg.Namespaces {
		svcs, err := t.services(ns)
		if err != nil {
			return err
		}
		for _, svc := range svcs {
			for _, p := range svc.Spec.Ports {
				eps := t.endpoints(ns, svc.Name, p.Name)
				if len(eps) == 0 || orTCP(p.Protocol) != corev1.ProtocolTCP {
					continue
				}
				pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				c, err := t.fwd.dial(pctx, ns, eps[0].pod, eps[0].port)
				cancel()
				if err != nil {
					return fmt.Errorf("the tunnel to pod %s/%s of service %s does not work: %w", ns, eps[0].pod, svc.Name, err)
				}
				c.Close()
				fmt.Fprintf(t.cfg.Log, "tunnel proven: service %s/%s, pod %s\n", ns, svc.Name, eps[0].pod)
				return nil
			}
		}
	}
	return nil
}

// shimAddrs are where a shim may answer: another teleport's shim may hold
// the first.
var shimAddrs = []string{"127.0.21.53:53", "127.0.21.54:53", "127.0.21.55:53", "127.0.21.56:53"}

// listenDNS starts the shim on the configured address, or the first free
// one of shimAddrs, and returns where it answers.
func (t *teleport) listenDNS(ctx context.Context) (string, error) {
	addrs := shimAddrs
	if t.cfg.DNSAddr != "" {
		addrs = []string{t.cfg.DNSAddr}
	}
	var lastErr error
	for _, addr := range addrs {
		ready := make(chan struct{})
		errc := make(chan error, 1)
		go func() {
			errc <- t.dns.ListenAndServe(ctx, addr, func() { close(ready) })
		}()
		select {
		case <-ready:
			return addr, nil
		case lastErr = <-errc:
		}
	}
	return "", fmt.Errorf("the DNS shim cannot listen on %s (--dns none or hosts do without it): %w", strings.Join(addrs, ", "), lastErr)
}

// startDNS serves the shim and points the resolver (or /etc/hosts) at it.
func (t *teleport) startDNS(ctx context.Context) error {
	if t.cfg.Sandbox != nil {
		return t.startSandboxDNS(ctx)
	}
	if t.cfg.DNS == DNSNone || t.cfg.DNS == DNSHosts {
		return nil
	}
	cur, err := os.ReadFile(t.cfg.ResolvConf)
	if err != nil {
		return fmt.Errorf("read %s: %w", t.cfg.ResolvConf, err)
	}
	addr, err := t.listenDNS(ctx)
	if err != nil {
		return err
	}
	host, _, _ := net.SplitHostPort(addr)
	nameserver, searchLine, upstreams := localnet.ResolverLines(cur, host, t.searchDomains())
	t.dns.SetUpstreams(upstreams)
	if err := localnet.SetBlock(ctx, t.cfg.Session, t.cfg.ResolvConf, "nameserver", true, nameserver); err != nil {
		return err
	}
	if err := localnet.SetBlock(ctx, t.cfg.Session, t.cfg.ResolvConf, "search", false, searchLine); err != nil {
		return err
	}
	fmt.Fprintf(t.cfg.Log, "DNS: %s now asks the shim at %s for cluster names (others go to %s)\n", t.cfg.ResolvConf, host, strings.Join(upstreams, ", "))
	return nil
}

// searchDomains are the cluster's search domains, the namespaces' first.
func (t *teleport) searchDomains() []string {
	var search []string
	for _, ns := range t.cfg.Namespaces {
		search = append(search, ns+".svc."+t.cfg.Domain)
	}
	return append(search, "svc."+t.cfg.Domain, t.cfg.Domain)
}

// startSandboxDNS serves the shim inside the sandbox, on the first of
// shimAddrs, and gives the sandbox a resolv.conf of the shim alone; other
// names go to this machine's resolvers (asked from here: the sandbox has
// no other network).
func (t *teleport) startSandboxDNS(ctx context.Context) error {
	addr := shimAddrs[0]
	host, _, _ := net.SplitHostPort(addr)
	pc, err := t.cfg.Sandbox.ListenPacket(addr)
	if err != nil {
		return fmt.Errorf("the DNS shim in the sandbox: %w", err)
	}
	l, err := t.cfg.Sandbox.Listen(addr)
	if err != nil {
		pc.Close()
		return fmt.Errorf("the DNS shim in the sandbox: %w", err)
	}
	cur, _ := os.ReadFile(t.cfg.ResolvConf)
	nameserver, searchLine, upstreams := localnet.ResolverLines(cur, host, t.searchDomains())
	t.dns.SetUpstreams(upstreams)
	go func() { _ = t.dns.Serve(ctx, pc, l, nil) }()
	content := "# kubectl cz run: cluster names from the shim of this sandbox\n" + strings.Join(append(nameserver, searchLine...), "\n") + "\n"
	return t.cfg.Sandbox.SetResolvConf([]byte(content))
}

func (t *teleport) excluded(ns, name string) bool {
	for _, x := range t.cfg.Exclude {
		if x == name || x == ns+"/"+name {
			return true
		}
	}
	return false
}

// target is one way to reach an exposed port: pods of the Service, or one pod.
type target struct {
	ns, service, portName, pod string
	port                       int // the pod's port, for a fixed pod
}

// services are a namespace's Services teleport serves, by name: not the
// excluded ones, nor kubectl-cz's own (an intercept's decoy), which are not
// part of the graph a developer works with.
func (t *teleport) services(ns string) ([]*corev1.Service, error) {
	all, err := t.svcs[ns].List(labels.Everything())
	if err != nil {
		return nil, err
	}
	var out []*corev1.Service
	for _, svc := range all {
		if svc.Labels[session.LabelManagedBy] != session.ManagedBy && !t.excluded(ns, svc.Name) {
			out = append(out, svc)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// reconcile brings addresses, listeners and DNS records in line with the
// Services and EndpointSlices now known.
func (t *teleport) reconcile(ctx context.Context) error {
	// This machine's addresses and routes, listed once for every Service;
	// a sandbox has none.
	host := localnet.NewHost()
	if t.cfg.Sandbox == nil {
		var err error
		if host, err = localnet.Snapshot(); err != nil {
			return err
		}
	}
	if err := t.addBatch(host); err != nil {
		return err
	}
	want := map[string]bool{}
	var records []dnsshim.Service
	var errs []string
	for _, ns := range t.cfg.Namespaces {
		svcs, err := t.services(ns)
		if err != nil {
			return err
		}
		for _, svc := range svcs {
			rec := dnsshim.Service{Name: svc.Name, Namespace: ns}
			for _, p := range svc.Spec.Ports {
				rec.Ports = append(rec.Ports, dnsshim.Port{Name: p.Name, Protocol: strings.ToLower(string(orTCP(p.Protocol))), Port: int(p.Port)})
			}
			switch {
			case svc.Spec.ClusterIP == corev1.ClusterIPNone:
				rec.Pods = map[string]net.IP{}
				for _, ep := range t.podEndpoints(ns, svc.Name) {
					key := ns + "/" + svc.Name + "/" + ep.pod
					want[key] = true
					e, err := t.expose(ctx, host, key, nil, ep.ports, func(port int) target {
						return target{ns: ns, service: svc.Name, pod: ep.pod, port: port}
					})
					if err != nil {
						errs = append(errs, err.Error())
						continue
					}
					rec.IPs = append(rec.IPs, e.ip)
					rec.Pods[ep.hostname] = e.ip
				}
			case svc.Spec.ClusterIP != "":
				key := ns + "/" + svc.Name
				want[key] = true
				ports := map[int]string{}
				for _, p := range svc.Spec.Ports {
					if orTCP(p.Protocol) == corev1.ProtocolTCP {
						ports[int(p.Port)] = p.Name
					}
				}
				e, err := t.expose(ctx, host, key, net.ParseIP(svc.Spec.ClusterIP), ports, func(port int) target {
					return target{ns: ns, service: svc.Name, portName: ports[port]}
				})
				if err != nil {
					errs = append(errs, err.Error())
					continue
				}
				rec.IPs = []net.IP{e.ip}
			default:
				continue // ExternalName: the shim does not answer for it
			}
			records = append(records, rec)
		}
	}
	for key, e := range t.exposed {
		if !want[key] {
			t.unexpose(key, e)
		}
	}
	t.fwd.retain(t.knownPods())
	t.dns.Set(t.cfg.Namespaces[0], records)
	if t.cfg.DNS == DNSHosts {
		if err := t.writeHosts(ctx, records); err != nil {
			return err
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

func orTCP(p corev1.Protocol) corev1.Protocol {
	if p == "" {
		return corev1.ProtocolTCP
	}
	return p
}

// expose gives key an address (clusterIP if it is free here, else one of
// the fallback range) and listeners on ports, each serving route(port).
func (t *teleport) expose(ctx context.Context, host *localnet.Host, key string, clusterIP net.IP, ports map[int]string, route func(int) target) (*exposure, error) {
	e := t.exposed[key]
	if e == nil {
		ip := clusterIP
		added := false
		if ip != nil && ip.To4() == nil {
			ip = nil // an IPv6 ClusterIP: the fallback range is IPv4
		}
		if ip != nil {
			if err, batched := t.batched[ip.String()]; batched {
				if err != nil {
					return nil, err
				}
				added = true // by addBatch, for this pass
			} else if host.Taken(ip) {
				fmt.Fprintf(t.cfg.Log, "%s: ClusterIP %s is taken on this machine; using a loopback address\n", key, ip)
				ip = nil
			}
		}
		if ip == nil {
			ip = t.fallback(key)
		} else if !added {
			if err := t.addAddress(ctx, ip); err != nil {
				return nil, err
			}
			host.Added(ip)
			added = true
		}
		e = &exposure{ip: ip, added: added, listeners: map[int]net.Listener{}}
		t.exposed[key] = e
	}
	for port := range ports {
		if e.listeners[port] != nil {
			continue
		}
		l, err := t.listen(net.JoinHostPort(e.ip.String(), strconv.Itoa(port)))
		if err != nil {
			return e, fmt.Errorf("%s: listen on %s port %d: %w", key, e.ip, port, err)
		}
		e.listeners[port] = l
		go t.serve(ctx, l, e, route(port))
	}
	for port, l := range e.listeners {
		if _, ok := ports[port]; !ok {
			l.Close()
			delete(e.listeners, port)
		}
	}
	return e, nil
}

func (t *teleport) unexpose(key string, e *exposure) {
	for _, l := range e.listeners {
		l.Close()
	}
	if e.added {
		if err := t.removeAddress(e.ip); err != nil {
			fmt.Fprintf(t.cfg.Log, "warning: %v\n", err)
		}
	}
	delete(t.exposed, key)
}

// addBatch adds the ClusterIPs of the Services this pass exposes anew, at
// once (journaled in one write each way), and notes each one's outcome in
// t.batched for expose.
func (t *teleport) addBatch(host *localnet.Host) error {
	t.batched = map[string]error{}
	var ips []net.IP
	for _, ns := range t.cfg.Namespaces {
		svcs, err := t.services(ns)
		if err != nil {
			return err
		}
		for _, svc := range svcs {
			ip := net.ParseIP(svc.Spec.ClusterIP).To4()
			if svc.Spec.ClusterIP == corev1.ClusterIPNone || ip == nil || t.exposed[ns+"/"+svc.Name] != nil || host.Taken(ip) {
				continue
			}
			if _, dup := t.batched[ip.String()]; !dup {
				t.batched[ip.String()] = nil
				ips = append(ips, ip)
			}
		}
	}
	if len(ips) == 0 {
		return nil
	}
	var errs []error
	if t.cfg.Sandbox != nil {
		for _, ip := range ips {
			errs = append(errs, t.cfg.Sandbox.AddAddress(ip))
		}
	} else {
		var err error
		if errs, err = localnet.AddAddresses(t.cfg.Session, ips); err != nil {
			return err
		}
	}
	for i, ip := range ips {
		t.batched[ip.String()] = errs[i]
		if errs[i] == nil {
			host.Added(ip)
		}
	}
	return nil
}

// addAddress, removeAddress and listen work on this machine (addresses
// journaled first) or in the sandbox.
func (t *teleport) addAddress(ctx context.Context, ip net.IP) error {
	if t.cfg.Sandbox != nil {
		return t.cfg.Sandbox.AddAddress(ip)
	}
	return localnet.AddAddress(ctx, t.cfg.Session, ip)
}

func (t *teleport) removeAddress(ip net.IP) error {
	if t.cfg.Sandbox != nil {
		return t.cfg.Sandbox.RemoveAddress(ip)
	}
	return localnet.RemoveAddress(ip)
}

func (t *teleport) listen(addr string) (net.Listener, error) {
	if t.cfg.Sandbox != nil {
		return t.cfg.Sandbox.Listen(addr)
	}
	return net.Listen("tcp", addr)
}

func (t *teleport) closeAll() {
	for _, e := range t.exposed {
		for _, l := range e.listeners {
			l.Close()
		}
	}
}

// fallback is key's address in 127.241.0.0/16, the same one for as long as
// teleport runs.
func (t *teleport) fallback(key string) net.IP {
	if ip, ok := t.ips[key]; ok {
		return ip
	}
	t.nextIP++
	n := t.nextIP
	ip := net.IPv4(fallbackBase[12], fallbackBase[13], byte(n>>8), byte(n))
	t.ips[key] = ip
	return ip
}

// serve relays each connection to a pod over port-forward.
func (t *teleport) serve(ctx context.Context, l net.Listener, e *exposure, to target) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			up, err := t.dial(ctx, e, to)
			if err != nil {
				fmt.Fprintf(t.cfg.Log, "warning: %v\n", err)
				c.Close()
				return
			}
			relay.Pipe(c, up)
		}()
	}
}

// dial reaches the target: its fixed pod, or a ready pod of the Service
// picked now, trying the next one if a pod cannot be reached.
func (t *teleport) dial(ctx context.Context, e *exposure, to target) (net.Conn, error) {
	if to.pod != "" {
		return t.fwd.dial(ctx, to.ns, to.pod, to.port)
	}
	eps := t.endpoints(to.ns, to.service, to.portName)
	if len(eps) == 0 {
		return nil, fmt.Errorf("service %s/%s has no ready pod", to.ns, to.service)
	}
	start := int(e.rr.Add(1))
	var lastErr error
	for i := range eps {
		ep := eps[(start+i)%len(eps)]
		c, err := t.fwd.dial(ctx, to.ns, ep.pod, ep.port)
		if err == nil {
			return c, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

// endpoint is a ready pod and its port for one Service port.
type endpoint struct {
	pod, hostname string
	port          int
	ports         map[int]string // every port (headless Services)
}

const serviceIndex = "service"

func (t *teleport) slicesOf(ns, service string) []*discoveryv1.EndpointSlice {
	objs, _ := t.bySvc[ns].ByIndex(serviceIndex, service)
	slices := make([]*discoveryv1.EndpointSlice, 0, len(objs))
	for _, o := range objs {
		if es, ok := o.(*discoveryv1.EndpointSlice); ok {
			slices = append(slices, es)
		}
	}
	return slices
}

// endpoints are the ready pods behind a Service port (by port name, as
// EndpointSlices name them).
func (t *teleport) endpoints(ns, service, portName string) []endpoint {
	var eps []endpoint
	for _, s := range t.slicesOf(ns, service) {
		port := -1
		for _, p := range s.Ports {
			name := ""
			if p.Name != nil {
				name = *p.Name
			}
			if name == portName && p.Port != nil {
				port = int(*p.Port)
			}
		}
		if port < 0 {
			continue
		}
		for _, ep := range s.Endpoints {
			if ep.TargetRef == nil || ep.TargetRef.Kind != "Pod" || (ep.Conditions.Ready != nil && !*ep.Conditions.Ready) {
				continue
			}
			eps = append(eps, endpoint{pod: ep.TargetRef.Name, port: port})
		}
	}
	sort.Slice(eps, func(i, j int) bool { return eps[i].pod < eps[j].pod })
	return eps
}

// knownPods are the pods ("ns/pod") in any EndpointSlice of the namespaces,
// ready or terminating: a connection to one of them may still be relayed.
func (t *teleport) knownPods() map[string]bool {
	pods := map[string]bool{}
	for _, ns := range t.cfg.Namespaces {
		slices, _ := t.slices[ns].List(labels.Everything())
		for _, s := range slices {
			for _, ep := range s.Endpoints {
				if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" {
					pods[ns+"/"+ep.TargetRef.Name] = true
				}
			}
		}
	}
	return pods
}

// podEndpoints are the ready pods of a headless Service with all their ports.
func (t *teleport) podEndpoints(ns, service string) []endpoint {
	byPod := map[string]*endpoint{}
	for _, s := range t.slicesOf(ns, service) {
		for _, ep := range s.Endpoints {
			if ep.TargetRef == nil || ep.TargetRef.Kind != "Pod" || (ep.Conditions.Ready != nil && !*ep.Conditions.Ready) {
				continue
			}
			e := byPod[ep.TargetRef.Name]
			if e == nil {
				host := ep.TargetRef.Name
				if ep.Hostname != nil {
					host = *ep.Hostname
				}
				e = &endpoint{pod: ep.TargetRef.Name, hostname: host, ports: map[int]string{}}
				byPod[ep.TargetRef.Name] = e
			}
			for _, p := range s.Ports {
				if p.Port != nil && (p.Protocol == nil || *p.Protocol == corev1.ProtocolTCP) {
					name := ""
					if p.Name != nil {
						name = *p.Name
					}
					e.ports[int(*p.Port)] = name
				}
			}
		}
	}
	var eps []endpoint
	for _, e := range byPod {
		eps = append(eps, *e)
	}
	sort.Slice(eps, func(i, j int) bool { return eps[i].pod < eps[j].pod })
	return eps
}

// writeHosts puts every name in a marked /etc/hosts block when it changed.
func (t *teleport) writeHosts(ctx context.Context, records []dnsshim.Service) error {
	var lines []string
	for _, r := range records {
		full := r.Name + "." + r.Namespace + ".svc." + t.cfg.Domain
		names := []string{full, r.Name + "." + r.Namespace + ".svc", r.Name + "." + r.Namespace}
		if r.Namespace == t.cfg.Namespaces[0] {
			names = append(names, r.Name)
		}
		if len(r.IPs) > 0 && r.Pods == nil {
			lines = append(lines, r.IPs[0].String()+"\t"+strings.Join(names, " "))
		}
		for host, ip := range r.Pods {
			lines = append(lines, ip.String()+"\t"+host+"."+full)
		}
	}
	sort.Strings(lines)
	if strings.Join(lines, "\n") == strings.Join(t.hosts, "\n") {
		return nil
	}
	if err := localnet.SetBlock(ctx, t.cfg.Session, t.cfg.Hosts, "hosts", false, lines); err != nil {
		return err
	}
	t.hosts = lines
	return nil
}

// forwarder keeps one port-forward connection per pod, reused for every
// stream to it, and replaces it when it breaks.
type forwarder struct {
	rest  *rest.Config
	kube  kubernetes.Interface
	mu    sync.Mutex
	conns map[string]*pfconn.Conn
	// spares are opened streams waiting for the next connection, by
	// "ns/pod:port" (spares.go).
	spares map[string]*sparePool
}

func (f *forwarder) dial(ctx context.Context, ns, pod string, port int) (net.Conn, error) {
	key := fmt.Sprintf("%s/%s:%d", ns, pod, port)
	spare, pool, want := f.takeSpare(key)
	for attempt := 0; ; attempt++ {
		c, err := f.conn(ctx, ns, pod)
		if err != nil {
			f.release(pool, want)
			return nil, err
		}
		s := spare
		if s == nil {
			st, err := c.DialPort(ctx, port)
			if err != nil {
				f.drop(ns+"/"+pod, c)
				if attempt > 0 {
					f.release(pool, want)
					return nil, err
				}
				continue
			}
			s = newSpare(st) // to know when its first answer came
		}
		f.refillAfterAnswer(c, s, key, pool, port, want)
		return s, nil
	}
}

func (f *forwarder) conn(ctx context.Context, ns, pod string) (*pfconn.Conn, error) {
	key := ns + "/" + pod
	f.mu.Lock()
	c := f.conns[key]
	f.mu.Unlock()
	if c != nil {
		select {
		case <-c.Done():
			f.drop(key, c)
		default:
			return c, nil
		}
	}
	c, err := pfconn.Dial(ctx, f.rest, f.kube, ns, pod)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if other := f.conns[key]; other != nil {
		c.Close() // another connection won the race
		return other, nil
	}
	f.conns[key] = c
	return c, nil
}

func (f *forwarder) drop(key string, c *pfconn.Conn) {
	f.mu.Lock()
	if f.conns[key] == c {
		delete(f.conns, key)
	}
	f.mu.Unlock()
	f.closeSpares(func(pod string) bool { return pod != key })
	c.Close()
}

// retain closes the connections to pods no Service sends to any more.
func (f *forwarder) retain(pods map[string]bool) {
	f.closeSpares(func(pod string) bool { return pods[pod] })
	f.mu.Lock()
	defer f.mu.Unlock()
	for key, c := range f.conns {
		if !pods[key] {
			c.Close()
			delete(f.conns, key)
		}
	}
}

func (f *forwarder) closeAll() {
	f.closeSpares(func(string) bool { return false })
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, c := range f.conns {
		c.Close()
		delete(f.conns, k)
	}
}
