package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// IsInit says whether this process is a sandbox's init (Start re-executes
// the binary with initEnv set); main then calls Init and nothing else.
func IsInit() bool { return os.Getenv(initEnv) == "1" }

// Init is the sandbox's first process: it sets up the namespaces, serves
// the plugin's requests on fd 3, runs the command and exits with its code.
func Init() int {
	tty := os.Getenv(ttyEnv) == "true"
	os.Unsetenv(initEnv)
	os.Unsetenv(ttyEnv)
	ctl := os.NewFile(3, "sandbox-control")
	syscall.CloseOnExec(3)
	if err := setup(); err != nil {
		fmt.Fprintf(os.Stderr, "error: sandbox: %v\n", err)
		return 125
	}
	// The signals the plugin passes on, and the terminal's, which a PID 1
	// would otherwise ignore (or Go's runtime would die of).
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, relayed...)
	in := &initState{ctl: ctl, started: make(chan *exec.Cmd, 1)}
	go in.serve() // exits the process when the plugin hangs up
	cmd := <-in.started
	done := make(chan struct{})
	go func() {
		for {
			select {
			case sig := <-sigs:
				if tty && (sig == syscall.SIGINT || sig == syscall.SIGQUIT) {
					continue // the terminal sent it to the command itself
				}
				_ = cmd.Process.Signal(sig)
			case <-done:
				return
			}
		}
	}()
	// PID 1 adopts the command's orphans: reap them until the command ends.
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		if err != nil && !errors.Is(err, syscall.EINTR) {
			close(done)
			return 125
		}
		if pid == cmd.Process.Pid {
			close(done)
			if ws.Signaled() {
				return 128 + int(ws.Signal())
			}
			return ws.ExitStatus()
		}
	}
}

// setup brings up the loopback interface (127/8 answers), keeps mounts
// made here from reaching this machine, and gives the command a /proc of
// its PID namespace where the kernel allows it.
func setup() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("loopback interface: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bring up the loopback interface: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	// Best effort: a /proc that a container's masks hide cannot be mounted
	// again, and the command then sees this machine's.
	_ = unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	// Capabilities for the init alone: the command gets none.
	_, _, _ = syscall.AllThreadsSyscall(syscall.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0)
	return nil
}

type initState struct {
	ctl     *os.File
	started chan *exec.Cmd
}

// serve answers requests until the plugin hangs up.
func (in *initState) serve() {
	buf := make([]byte, maxMessage+1)
	for {
		n, err := in.ctl.Read(buf)
		if err != nil || n == 0 {
			// The plugin is gone: so is the sandbox (Pdeathsig does the rest).
			os.Exit(125)
		}
		var req request
		var r reply
		var fd = -1
		if n > maxMessage {
			r.Err = "request too large"
		} else if err := json.Unmarshal(buf[:n], &req); err != nil {
			r.Err = "bad request: " + err.Error()
		} else {
			fd, r = in.handle(req)
		}
		b, _ := json.Marshal(r)
		var oob []byte
		if fd >= 0 {
			oob = unix.UnixRights(fd)
		}
		if err := unix.Sendmsg(int(in.ctl.Fd()), b, oob, nil, 0); err != nil {
			os.Exit(125)
		}
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

func (in *initState) handle(req request) (int, reply) {
	fail := func(err error) (int, reply) { return -1, reply{Err: err.Error()} }
	switch req.Op {
	case "addr", "deladdr":
		ip := net.ParseIP(req.IP)
		if ip == nil {
			return fail(fmt.Errorf("%q is no address", req.IP))
		}
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return fail(err)
		}
		bits := 32
		if ip.To4() == nil {
			bits = 128
		}
		a := &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)}, Scope: int(netlink.SCOPE_HOST)}
		if req.Op == "addr" {
			err = netlink.AddrReplace(lo, a)
		} else if err = netlink.AddrDel(lo, a); errors.Is(err, syscall.EADDRNOTAVAIL) {
			err = nil
		}
		if err != nil {
			return fail(fmt.Errorf("%s %s: %w", req.Op, ip, err))
		}
		return -1, reply{}
	case "listen", "listenpacket", "dial":
		fd, err := socketFor(req.Op, req.Addr)
		if err != nil {
			return fail(err)
		}
		return fd, reply{}
	case "resolv":
		if err := bindResolvConf(req.Content); err != nil {
			return fail(err)
		}
		return -1, reply{}
	case "start":
		if len(req.Argv) == 0 {
			return fail(errors.New("no command"))
		}
		cmd := exec.Command(req.Argv[0], req.Argv[1:]...)
		cmd.Env, cmd.Dir = req.Env, req.Dir
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		// The command gets none of the init's capabilities: the fork happens
		// on this thread, whose ambient set is cleared first (setup cleared
		// every thread's where the runtime allows it: not with cgo).
		runtime.LockOSThread() // kept: the thread's capability state changed
		if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0); e != 0 {
			return fail(fmt.Errorf("drop the command's capabilities: %w", e))
		}
		if err := cmd.Start(); err != nil {
			return fail(err)
		}
		in.started <- cmd
		return -1, reply{PID: cmd.Process.Pid}
	}
	return fail(fmt.Errorf("unknown request %q", req.Op))
}

// socketFor makes, inside the sandbox's network, a listening TCP socket, a
// bound UDP one, or a TCP connection, for the plugin to use.
func socketFor(op, addr string) (int, error) {
	var f interface{ File() (*os.File, error) }
	var c interface{ Close() error }
	switch op {
	case "listen":
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return -1, err
		}
		f, c = l.(*net.TCPListener), l
	case "listenpacket":
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return -1, err
		}
		f, c = pc.(*net.UDPConn), pc
	case "dial":
		// Bounded: requests are answered one at a time.
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return -1, err
		}
		f, c = conn.(*net.TCPConn), conn
	}
	defer c.Close()
	file, err := f.File() // a duplicate, in blocking mode: the receiver's net package sets its own
	if err != nil {
		return -1, err
	}
	fd, err := unix.Dup(int(file.Fd()))
	file.Close()
	return fd, err
}

// bindResolvConf mounts a file with content over /etc/resolv.conf, in this
// mount namespace only: written on a tmpfs mounted for the moment over
// /tmp (here, not on this machine), bound, and the tmpfs let go again (the
// bound file keeps it).
func bindResolvConf(content []byte) error {
	const dir = "/tmp"
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=64k,mode=0755"); err != nil {
		return fmt.Errorf("mount a tmpfs for resolv.conf: %w", err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	file := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(file, content, 0o644); err != nil {
		return err
	}
	target := "/etc/resolv.conf"
	if err := unix.Mount(file, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind the sandbox's resolv.conf over %s: %w", target, err)
	}
	return nil
}
