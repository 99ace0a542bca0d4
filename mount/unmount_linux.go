package mount

import "syscall"

// detachUnmount takes a mount away even while it is busy (a shell inside
// it): the kernel finishes when it can.
func detachUnmount(dir string) error { return syscall.Unmount(dir, syscall.MNT_DETACH) }
