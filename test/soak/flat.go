package soak

import "fmt"

// flatTolerance is how far a figure at the end of the soak may be from its
// value after the warm-up: 10 %.
const flatTolerance = 0.10

// FlatCheck compares one figure at the end with its value after warm-up.
type FlatCheck struct {
	Name      string
	Warm, End int64
	// Slack is an absolute allowance on top of the 10 % for small counts:
	// one idle keep-alive connection to Entra that happens to be open at
	// one sample and not at the other is 2 goroutines and 1 descriptor,
	// more than 10 % of the proxy's 15 goroutines at rest.
	Slack int64
	Unit  string
}

// allowed is the largest difference that still counts as flat.
func (c FlatCheck) allowed() int64 {
	return max(int64(float64(c.Warm)*flatTolerance), c.Slack)
}

// Flat reports whether End is within the allowance of Warm.
func (c FlatCheck) Flat() bool {
	d := c.End - c.Warm
	if d < 0 {
		d = -d
	}
	return d <= c.allowed()
}

func (c FlatCheck) String() string {
	verdict := "flat"
	if !c.Flat() {
		verdict = "NOT FLAT"
	}
	pct := 0.0
	if c.Warm != 0 {
		pct = 100 * float64(c.End-c.Warm) / float64(c.Warm)
	}
	return fmt.Sprintf("%-10s after warm-up %s, at the end %s (%+.1f %%, allowed ±%s): %s",
		c.Name, c.format(c.Warm), c.format(c.End), pct, c.format(c.allowed()), verdict)
}

func (c FlatCheck) format(v int64) string {
	if c.Unit == "MiB" {
		return fmt.Sprintf("%.1f MiB", float64(v)/(1<<20))
	}
	return fmt.Sprintf("%d", v)
}
