//go:build !linux && !windows

package localrun

import "syscall"

// procAttr: its own process group. Without Linux's Pdeathsig, a kill -9 of
// kubectl cz leaves the process running; a stop or Ctrl-C still ends it.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
