package teleport

import (
	"net"
	"testing"
)

func TestWithoutBlock(t *testing.T) {
	in := "127.0.0.1 localhost\n# kubectl cz teleport abc: begin (removed when the session closes)\n10.96.0.1\tcore\n# kubectl cz teleport abc: end\n# kubectl cz teleport other: begin\nx\n# kubectl cz teleport other: end\n"
	want := "127.0.0.1 localhost\n# kubectl cz teleport other: begin\nx\n# kubectl cz teleport other: end\n"
	if got := string(withoutBlock([]byte(in), "abc")); got != want {
		t.Errorf("got %q", got)
	}
}

func TestFallbackIsStablePerKey(t *testing.T) {
	tp := &teleport{ips: map[string]net.IP{}}
	a, b := tp.fallback("ns/a"), tp.fallback("ns/b")
	if a.Equal(b) || !tp.fallback("ns/a").Equal(a) || a.String() != "127.241.0.1" {
		t.Errorf("a %s b %s", a, b)
	}
}
