package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"

	"github.com/vishvananda/netns"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// teleport measures `kubectl cz teleport namespace` on the bench namespace,
// from the laptop namespace, beside kubectl port-forward and the direct path
// (the portforward section's rows, from the same run): time to active,
// throughput, keep-alive and new-connection latency to the Service's
// ClusterIP, which teleport mirrors on the laptop.
func (b *bench) teleport(ctx context.Context) error {
	fmt.Fprintln(os.Stderr, "bench: kubectl cz teleport")
	svc, err := b.cs.CoreV1().Services(benchNamespace).Get(ctx, benchPod, metav1.GetOptions{})
	if err != nil {
		return err
	}
	dial, err := laptopDialer()
	if err != nil {
		return err
	}
	active := &row{name: "time from start to teleport active, kubectl cz teleport", unit: "s"}
	var stop func() error
	for run := 0; run < b.runs; run++ {
		cmd, secs, err := startPlugin(ctx, teleportActive, "-n", benchNamespace, "teleport", "namespace", "--dns", "none")
		if err != nil {
			return err
		}
		active.samples = append(active.samples, secs)
		if run < b.runs-1 {
			if err := stopPlugin(cmd); err != nil {
				return fmt.Errorf("teleport exit: %w", err)
			}
			continue
		}
		stop = func() error { return stopPlugin(cmd) }
	}
	b.table.add(active)
	base := "http://" + net.JoinHostPort(svc.Spec.ClusterIP, strconv.Itoa(int(svc.Spec.Ports[0].Port)))
	err = b.httpRows(ctx, "kubectl cz teleport", base, "kubectl port-forward (websocket)", dial)
	if serr := stop(); err == nil && serr != nil {
		err = fmt.Errorf("teleport exit: %w", serr)
	}
	return err
}

// laptopDialer opens TCP connections from inside the laptop network
// namespace: a socket belongs to the namespace its creating thread was in.
func laptopDialer() (func(context.Context, string, string) (net.Conn, error), error) {
	ns, err := netns.GetFromName(laptopNetns)
	if err != nil {
		return nil, fmt.Errorf("laptop namespace: %w", err)
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			runtime.LockOSThread()
			orig, err := netns.Get()
			if err != nil {
				ch <- result{nil, err}
				return // the thread stays locked and ends with the goroutine
			}
			defer orig.Close() // one descriptor per dial otherwise: a scan of 1,000 Services ran out
			if err := netns.Set(ns); err != nil {
				ch <- result{nil, err}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if netns.Set(orig) == nil {
				runtime.UnlockOSThread()
			}
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}, nil
}
