//go:build !linux

package fusefs

// widenReadAhead: Linux's per-device read-ahead; nothing to do elsewhere.
func widenReadAhead(string) {}
