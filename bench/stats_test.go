package main

import (
	"strings"
	"testing"
)

func TestQuantileAndTable(t *testing.T) {
	tab := &table{}
	tab.add(&row{name: "GET, direct", unit: "MiB/s", samples: []float64{1000, 900, 1100}})
	tab.add(&row{name: "GET, tunnel", unit: "MiB/s", samples: []float64{100, 300, 200}, baseline: "GET, direct"})
	md := tab.markdown()
	if !strings.Contains(md, "| GET, tunnel | MiB/s | 100 | 200 | 300 | 300 | 3 | 0.20x direct |") {
		t.Fatalf("table:\n%s", md)
	}
	s := make([]float64, 100)
	for i := range s {
		s[i] = float64(i + 1)
	}
	if quantile(s, 0.5) != 50 || quantile(s, 0.99) != 99 || quantile(s, 0) != 1 || quantile(s, 1) != 100 {
		t.Fatal("quantiles of 1..100")
	}
}
