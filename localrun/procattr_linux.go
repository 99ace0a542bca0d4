package localrun

import "syscall"

// procAttr: its own process group; killed with kubectl cz (Pdeathsig).
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
