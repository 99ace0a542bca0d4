//go:build !linux

package fusefs

func mapBuffer(n int) []byte { return make([]byte, n) }

func unmapBuffer([]byte) {}
