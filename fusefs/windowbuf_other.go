//go:build !linux

package fusefs

func newWindowBuffer() []byte { return make([]byte, streamWindow) }

func freeWindowBuffer([]byte) {}
