package teleport

import (
	"net"
	"testing"
)

func TestFallbackIsStablePerKey(t *testing.T) {
	tp := &teleport{ips: map[string]net.IP{}}
	a, b := tp.fallback("ns/a"), tp.fallback("ns/b")
	if a.Equal(b) || !tp.fallback("ns/a").Equal(a) || a.String() != "127.241.0.1" {
		t.Errorf("a %s b %s", a, b)
	}
}
