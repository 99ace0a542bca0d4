package teleport

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"runtime"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-cz/kubectl-cz/lifecycle"
	"github.com/kubectl-cz/kubectl-cz/session"
)

// KindNamespaces records which namespaces a session teleports, for
// session show and graph; its undo has nothing to do (the addresses and
// files have their own entries).
const KindNamespaces = "teleport.namespaces"

type namespacesData struct {
	Namespaces []string `json:"namespaces"`
}

func init() {
	session.RegisterKind(session.Kind{Name: KindNamespaces, Local: true,
		Check: func(e session.Entry) error {
			var d namespacesData
			if err := json.Unmarshal(e.Data, &d); err != nil || len(d.Namespaces) == 0 {
				return fmt.Errorf("a teleport entry without namespaces")
			}
			return nil
		},
		Undo: func(context.Context, *session.UndoContext, session.Entry) error { return nil },
		Describe: func(e session.Entry) session.Alteration {
			var d namespacesData
			_ = json.Unmarshal(e.Data, &d)
			return session.Alteration{Text: "teleport of " + strings.Join(d.Namespaces, ", ") + " to this machine", Namespaces: d.Namespaces, Role: "teleported"}
		}})
}

var domainName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// Part is a teleport as a part of an environment: Config without its
// Session and Ready, which the part fills in.
type Part struct {
	Config Config
	// Start is when the command started, for the time to active.
	Start time.Time
}

func (p *Part) Name() string { return "teleport namespace " + strings.Join(p.Config.Namespaces, " ") }

// Needs: teleport's changes are this machine's (no journal in the
// cluster); what it needs there is to watch and to tunnel.
func (p *Part) Needs() []lifecycle.Right {
	var rights []lifecycle.Right
	for _, ns := range p.Config.Namespaces {
		rights = append(rights, lifecycle.Rights("teleport", ns, [3]string{"list", "", "services"}, [3]string{"watch", "", "services"},
			[3]string{"list", "discovery.k8s.io", "endpointslices"}, [3]string{"watch", "discovery.k8s.io", "endpointslices"}, lifecycle.TunnelRight)...)
	}
	return rights
}

// Prepare checks that this process may change the network and that the
// namespaces exist.
func (p *Part) Prepare(ctx context.Context) error {
	if runtime.GOOS != "linux" {
		return fmt.Errorf("teleport needs Linux (addresses through netlink), which %s is not: reach Services with kubectl port-forward", runtime.GOOS)
	}
	if os.Geteuid() != 0 && p.Config.Sandbox == nil {
		return fmt.Errorf("teleport changes this machine's addresses and resolver: run it as root (sudo -E kubectl cz ...), or run one command teleported without root: kubectl cz run -- COMMAND")
	}
	switch p.Config.DNS {
	case DNSAuto, DNSResolvConf, DNSHosts, DNSNone, "":
	default:
		return fmt.Errorf("dns %q: want auto, resolvconf, hosts or none", p.Config.DNS)
	}
	if d := p.Config.Domain; d != "" && !domainName.MatchString(d) {
		return fmt.Errorf("cluster domain %q is not a DNS name", d)
	}
	for _, ns := range p.Config.Namespaces {
		if _, err := p.Config.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return fmt.Errorf("namespace %q not found", ns)
		}
	}
	return nil
}

// Plan says what teleport would change on this machine.
func (p *Part) Plan() []string {
	if p.Config.Sandbox != nil {
		return []string{"in the command's own network: each Service's ClusterIP on its loopback, one listener per port, the DNS shim and a resolv.conf of its own; nothing on this machine"}
	}
	dns := p.Config.DNS
	if dns == "" {
		dns = DNSAuto
	}
	plan := []string{
		fmt.Sprintf("add each Service's ClusterIP of %s to lo (or an address in 127.241/16), one listener per port", strings.Join(p.Config.Namespaces, ", ")),
		"answer cluster names with a DNS shim on " + dnsAddr(p.Config),
	}
	switch dns {
	case DNSHosts:
		plan = append(plan, "add a marked block to "+orDefault(p.Config.Hosts, "/etc/hosts"))
	case DNSNone:
	default:
		plan = append(plan, "point "+orDefault(p.Config.ResolvConf, "/etc/resolv.conf")+" at the shim with two marked blocks, a nameserver first and a search line last (dns "+dns+")")
	}
	if len(p.Config.Exclude) > 0 {
		plan = append(plan, "leave out "+strings.Join(p.Config.Exclude, ", "))
	}
	return plan
}

func dnsAddr(c Config) string {
	return orDefault(c.DNSAddr, "127.0.21.53:53 (or the next free of .54-.56)")
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// Run teleports until ctx ends, then puts this machine's network back.
func (p *Part) Run(ctx context.Context, s *session.Session, active func()) error {
	e, err := s.Record(ctx, KindNamespaces, "teleport", "", namespacesData{Namespaces: p.Config.Namespaces})
	if err != nil {
		return err
	}
	if _, err := s.Applied(ctx, e, nil); err != nil {
		return err
	}
	cfg := p.Config
	cfg.Session = s
	cfg.Ready = func() {
		fmt.Fprintf(cfg.Log, "teleport active after %.1fs: the Services of %s answer here by their cluster names\n",
			time.Since(p.Start).Seconds(), strings.Join(cfg.Namespaces, ", "))
		active()
	}
	err = Run(ctx, cfg)
	if cfg.Sandbox == nil {
		fmt.Fprintln(cfg.Log, "restoring this machine's network and resolver")
	}
	return err
}
