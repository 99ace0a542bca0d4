//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// gRPC (HTTP/2 cleartext) and a WebSocket through the header path, on a
// multi-port Service (leaf: http and grpc): each intercepted port routes by
// header, and what is not matched still reaches the cluster's leaf.
func TestInterceptGRPCAndWebSocket(t *testing.T) {
	cs := clientset(t)
	before := guardService(t, cs, "leaf")
	svc, err := cs.CoreV1().Services(demoNamespace).Get(context.Background(), "leaf", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	leafIP := svc.Spec.ClusterIP

	bin := filepath.Join(repoRoot(t), ".cz", "bin", "cz-demo")
	local := startOnLaptop(t, []string{"ROLE=leaf", "POD_NAME=laptop-leaf", "LISTEN=127.0.0.1:3005", "GRPC_LISTEN=127.0.0.1:3006"}, bin)
	local.waitFor("listening", 10*time.Second)
	t.Cleanup(func() { local.signal(syscall.SIGTERM) })

	env := machine(t)
	grpcIcpt := startOnLaptop(t, env, "kubectl", "cz", "-n", demoNamespace, "intercept", "service", "leaf",
		"--remote-port", "grpc", "--local-port", "3006", "--header", "x-cz-intercept=grace")
	grpcIcpt.waitFor("intercept active", 60*time.Second)
	// Only the grpc port is intercepted: leaf's http port keeps serving the graph.
	waitUntil(t, 15*time.Second, func() bool {
		got, err := coreServedBy(t, frontendIP(t, cs))
		return err == nil && strings.HasPrefix(got, "core-")
	})
	httpIcpt := startOnLaptop(t, env, "kubectl", "cz", "-n", demoNamespace, "intercept", "service", "leaf",
		"--remote-port", "http", "--local-port", "3005", "--header", "x-cz-intercept=grace")
	httpIcpt.waitFor("intercept active", 60*time.Second)

	// gRPC keeps one HTTP/2 connection: dial again until kube-proxy sends
	// new connections to the interceptor, then use that one connection for
	// calls with and without the header.
	var health healthpb.HealthClient
	var servedBy func(value string) (string, error)
	dial := func() *grpc.ClientConn {
		conn, err := grpc.NewClient("passthrough:///"+net.JoinHostPort(leafIP, "9090"), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		health = healthpb.NewHealthClient(conn)
		return conn
	}
	servedBy = func(value string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if value != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "x-cz-intercept", value)
		}
		var md metadata.MD
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&md))
		if err != nil {
			return "", err
		}
		if resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health %v", resp.Status)
		}
		return strings.Join(md.Get("x-served-by"), ","), nil
	}
	var conn *grpc.ClientConn
	waitUntil(t, 15*time.Second, func() bool {
		if conn != nil {
			conn.Close()
		}
		conn = dial()
		got, _ := servedBy("grace")
		return got == "laptop-leaf"
	})
	defer conn.Close()
	for i := 0; i < 10; i++ {
		if got, err := servedBy("grace"); err != nil || got != "laptop-leaf" {
			t.Fatalf("gRPC with header: %q %v", got, err)
		}
		if got, err := servedBy(""); err != nil || !strings.HasPrefix(got, "leaf-") {
			t.Fatalf("gRPC without header: %q %v", got, err)
		}
	}

	// WebSocket: the upgrade request carries the header.
	echo := func(header http.Header) (string, error) {
		c, _, err := websocket.DefaultDialer.Dial("ws://"+leafIP+"/ws", header)
		if err != nil {
			return "", err
		}
		defer c.Close()
		if err := c.WriteMessage(websocket.TextMessage, []byte("hello")); err != nil {
			return "", err
		}
		_, msg, err := c.ReadMessage()
		return string(msg), err
	}
	waitUntil(t, 15*time.Second, func() bool {
		got, _ := echo(http.Header{"X-Cz-Intercept": {"grace"}})
		return got == "laptop-leaf: hello"
	})
	if got, err := echo(nil); err != nil || !strings.HasPrefix(got, "leaf-") || !strings.HasSuffix(got, ": hello") {
		t.Fatalf("WebSocket without header: %q %v", got, err)
	}
	// The rest of the graph still works through leaf's intercepted http port.
	if got, err := coreServedBy(t, frontendIP(t, cs)); err != nil || !strings.HasPrefix(got, "core-") {
		t.Fatalf("graph through the interceptor: %q %v", got, err)
	}

	stopIntercept(t, grpcIcpt)
	stopIntercept(t, httpIcpt)
	if after := serviceSnapshot(t, cs, "leaf"); !bytes.Equal(after, before) {
		t.Errorf("leaf not restored:\nbefore %s\nafter  %s", before, after)
	}
}
