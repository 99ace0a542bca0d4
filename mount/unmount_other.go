//go:build !linux

package mount

import "errors"

func detachUnmount(string) error { return errors.New("mount needs Linux FUSE") }
