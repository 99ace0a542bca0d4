package main

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

// row is one measured figure: its samples and, optionally, the row it is
// compared with (the ratio printed is median / baseline median).
type row struct {
	name     string
	unit     string // "MiB/s", "ms" or "s"
	samples  []float64
	baseline string
}

type table struct{ rows []*row }

func (t *table) add(r *row) { t.rows = append(t.rows, r) }

func (t *table) find(name string) *row {
	for _, r := range t.rows {
		if r.name == name {
			return r
		}
	}
	return nil
}

func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func (r *row) sorted() []float64 {
	s := append([]float64(nil), r.samples...)
	sort.Float64s(s)
	return s
}

func (r *row) median() float64 { return quantile(r.sorted(), 0.5) }

func format(v float64) string {
	switch {
	case math.IsNaN(v):
		return "-"
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func (t *table) markdown() string {
	var b strings.Builder
	b.WriteString("| path | unit | min | median | p99 | max | samples | vs baseline |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---|\n")
	for _, r := range t.rows {
		s := r.sorted()
		ratio := ""
		if base := t.find(r.baseline); base != nil && base.median() > 0 {
			ratio = fmt.Sprintf("%.2fx %s", r.median()/base.median(), shortName(base.name))
			if r.unit == "ms" {
				// For latency, what users feel is the time added.
				ratio += fmt.Sprintf(" (%s ms p50, %s ms p99)", signed(r.median()-base.median()), signed(quantile(s, 0.99)-quantile(base.sorted(), 0.99)))
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %d | %s |\n", r.name, r.unit,
			format(quantile(s, 0)), format(quantile(s, 0.5)), format(quantile(s, 0.99)), format(quantile(s, 1)), len(s), ratio)
	}
	return b.String()
}

// signed is a difference with its sign: "+0.30", "-0.18".
func signed(v float64) string {
	if v < 0 {
		return "-" + format(-v)
	}
	return "+" + format(v)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func mibps(n int64, d time.Duration) float64 { return float64(n) / (1 << 20) / d.Seconds() }

// shortName is a row's path without its metric ("GET 100 MiB, direct" -> "direct").
func shortName(name string) string {
	if i := strings.LastIndex(name, ", "); i >= 0 {
		return name[i+2:]
	}
	return name
}
