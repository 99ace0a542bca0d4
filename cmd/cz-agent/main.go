// Command cz-agent is kubectl-cz's in-cluster agent, one static binary in
// an image with nothing else. `cz-agent intercept` runs in the interceptor
// Deployment of `kubectl cz intercept`; `cz-agent files` in the ephemeral
// container of `kubectl cz mount`.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kubectl-cz/kubectl-cz/agent/files"
	"github.com/kubectl-cz/kubectl-cz/agent/interceptor"
	"github.com/kubectl-cz/kubectl-cz/agent/wire"
)

// Set by the linker.
var version = "v0.0.0-dev"

type portsFlag []interceptor.Port

func (p *portsFlag) String() string { return fmt.Sprint(*p) }

// Set parses NAME:LISTEN:DECOYPORT[:http].
func (p *portsFlag) Set(v string) error {
	parts := strings.Split(v, ":")
	if len(parts) < 3 || len(parts) > 4 || parts[0] == "" {
		return fmt.Errorf("%q: want NAME:LISTEN:DECOYPORT[:http]", v)
	}
	listen, err1 := strconv.Atoi(parts[1])
	decoy, err2 := strconv.Atoi(parts[2])
	if err1 != nil || err2 != nil {
		return fmt.Errorf("%q: ports must be numbers", v)
	}
	port := interceptor.Port{Name: parts[0], Listen: listen, DecoyPort: decoy}
	if len(parts) == 4 {
		if parts[3] != "http" {
			return fmt.Errorf("%q: the mode can only be http", v)
		}
		port.HTTP = true
	}
	*p = append(*p, port)
	return nil
}

// secret is the connection secret the kubelet put in the environment from
// the session's Secret; it leaves the environment at once, so nothing this
// process starts could inherit it.
func secret() string {
	v := os.Getenv(wire.SecretEnv)
	os.Unsetenv(wire.SecretEnv)
	return v
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: cz-agent intercept|files|probe|version [flags]")
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	switch os.Args[1] {
	case "version":
		fmt.Println(version)
	case "probe":
		// The kubelet's probe, run inside the container: the agents listen
		// on the pod's loopback only, which a TCP probe cannot reach.
		if len(os.Args) != 3 {
			fmt.Fprintln(os.Stderr, "usage: cz-agent probe HOST:PORT")
			os.Exit(2)
		}
		c, err := net.DialTimeout("tcp", os.Args[2], 2*time.Second)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		c.Close()
	case "intercept":
		fs := flag.NewFlagSet("intercept", flag.ExitOnError)
		var ports portsFlag
		decoy := fs.String("decoy", "", "address (ClusterIP) of the decoy Service that selects the original pods")
		probe := fs.String("probe", "", "the intercepted Service's own address (ClusterIP:port), for route probes")
		control := fs.String("control", "127.0.0.1:"+strconv.Itoa(wire.ControlPort), "address of the control port laptops port-forward to (loopback: only port-forward reaches it)")
		fs.Var(&ports, "port", "a Service port: NAME:LISTEN:DECOYPORT[:http] (repeatable)")
		_ = fs.Parse(os.Args[2:])
		if *decoy == "" || len(ports) == 0 {
			fmt.Fprintln(os.Stderr, "cz-agent intercept: --decoy and at least one --port are required")
			os.Exit(2)
		}
		s := &interceptor.Server{Decoy: *decoy, Probe: *probe, Ports: ports, Log: log, Secret: secret()}
		if err := s.Run(ctx, *control); err != nil {
			log.Error("interceptor stopped", "err", err)
			os.Exit(1)
		}
	case "files":
		fs := flag.NewFlagSet("files", flag.ExitOnError)
		listen := fs.String("listen", "127.0.0.1:"+strconv.Itoa(files.Port), "address to serve SFTP on (loopback: only port-forward reaches it)")
		idle := fs.Duration("idle-exit", 30*time.Second, "exit after this long without a connection")
		_ = fs.Parse(os.Args[2:])
		s := &files.Server{Log: log, IdleExit: *idle, Secret: secret()}
		if err := s.Run(ctx, *listen); err != nil {
			log.Error("file server stopped", "err", err)
			os.Exit(1)
		}
	default:
		fmt.Fprintf(os.Stderr, "cz-agent: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}
