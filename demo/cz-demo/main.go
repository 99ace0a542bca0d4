// Command cz-demo is every service of the sample-project graph
// (frontend -> core -> leaf, core -> db). Each answers GET / with a JSON hop
// naming its service and pod, after calling its downstreams by cluster DNS
// name with the developer's routing headers propagated, so a single request
// shows the path it took, and which hop an intercept moved to a laptop.
//
// The db role is a small in-memory key-value store (GET/PUT /kv/KEY).
// Every role also serves /healthz, /ping and /bytes?n=N for benchmarks.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	cfg := config{}
	flag.StringVar(&cfg.Role, "role", env("ROLE", "leaf"), "service role: frontend, core, leaf or db (env ROLE)")
	flag.StringVar(&cfg.Listen, "listen", env("LISTEN", ":8080"), "listen address (env LISTEN)")
	downstreams := flag.String("downstreams", env("DOWNSTREAMS", ""), "comma-separated downstream base URLs, called on GET / (env DOWNSTREAMS)")
	propagate := flag.String("propagate", env("PROPAGATE_HEADERS", "x-cz-intercept,baggage"), "comma-separated request headers passed on to downstreams (env PROPAGATE_HEADERS)")
	grpcListen := flag.String("grpc-listen", env("GRPC_LISTEN", ""), "also serve gRPC (health service) here (env GRPC_LISTEN)")
	flag.StringVar(&cfg.SeedDir, "seed-dir", env("SEED_DIR", ""), "write a few sample files here if it is empty (env SEED_DIR)")
	flag.Parse()
	cfg.Downstreams = splitList(*downstreams)
	cfg.Propagate = splitList(*propagate)
	cfg.Pod = env("POD_NAME", hostname())
	cfg.Namespace = env("POD_NAMESPACE", "")

	if cfg.SeedDir != "" {
		if err := seedFiles(cfg.SeedDir); err != nil {
			log.Fatalf("seed %s: %v", cfg.SeedDir, err)
		}
	}
	srv := &http.Server{Addr: cfg.Listen, Handler: newServer(cfg), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		log.Fatal(err)
	}
	if *grpcListen != "" {
		gln, err := net.Listen("tcp", *grpcListen)
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			if err := serveGRPC(ctx, gln, cfg.Pod); err != nil {
				log.Fatal(err)
			}
		}()
	}
	log.Printf("%s (%s) listening on %s; downstreams %v; propagating %v", cfg.Role, cfg.Pod, cfg.Listen, cfg.Downstreams, cfg.Propagate)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}

func env(key, def string) string {
	if v, ok := os.LookupEnv(key); ok {
		return v
	}
	return def
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// seedFiles gives the core service's volume something to look at when it is
// mounted on a laptop.
func seedFiles(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if len(entries) > 0 {
		return nil
	}
	files := map[string]string{
		"README.md":             "# core data\n\nFiles of the core service's emptyDir volume, seeded by cz-demo.\n",
		"config/settings.yaml":  "greeting: hello from core\nfeature_flags:\n  new_checkout: false\n",
		"config/upstreams.json": "{\"leaf\": \"http://leaf\", \"db\": \"http://db:8080\"}\n",
		"logs/app.log":          fmt.Sprintf("%s core started\n", time.Now().UTC().Format(time.RFC3339)),
	}
	for name, content := range files {
		p := dir + "/" + name
		if err := os.MkdirAll(p[:strings.LastIndexByte(p, '/')], 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}
