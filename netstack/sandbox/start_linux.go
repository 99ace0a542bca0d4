package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// Sandbox is a running sandbox, seen from the plugin.
type Sandbox struct {
	init *exec.Cmd
	ctl  *os.File
	mu   sync.Mutex // one request at a time on ctl
	tty  bool
	// exited is closed when the init ends; code is then its exit code.
	exited chan struct{}
	code   int
	err    error
	// relaying: this process's signals are taken (RelaySignals); commanded:
	// Run asked for the command, so they are the command's from then on.
	relaying  sync.Once
	commanded atomic.Bool
}

// Start starts a sandbox's init, which waits for requests. The command it
// will run gets stdio as its standard input, output and error (default:
// this process's).
func Start(stdio ...*os.File) (*Sandbox, error) {
	if err := Supported(); err != nil {
		return nil, err
	}
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("sandbox control socket: %w", err)
	}
	ctl, child := os.NewFile(uintptr(pair[0]), "sandbox-control"), os.NewFile(uintptr(pair[1]), "sandbox-control")
	defer child.Close()
	s := &Sandbox{ctl: ctl, tty: foregroundTerminal(), exited: make(chan struct{})}
	cmd := exec.Command("/proc/self/exe")
	cmd.Args = []string{"kubectl-cz-sandbox"}
	cmd.Env = append(os.Environ(), initEnv+"=1", ttyEnv+"="+strconv.FormatBool(s.tty))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if len(stdio) == 3 {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = stdio[0], stdio[1], stdio[2]
	}
	cmd.ExtraFiles = []*os.File{child} // fd 3
	cmd.SysProcAttr = attrs()
	s.init = cmd

	// Pdeathsig fires when the thread that started the child ends: start
	// it from a thread kept for the sandbox's whole life.
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		err := cmd.Start()
		started <- err
		if err != nil {
			return
		}
		err = cmd.Wait()
		s.code, s.err = exitCode(cmd.ProcessState, err)
		close(s.exited)
	}()
	if err := <-started; err != nil {
		ctl.Close()
		return nil, refusal(err)
	}
	return s, nil
}

// attrs are the init's namespaces: as root, network, mount and PID ones;
// as another user, a user namespace too, in which the user keeps their own
// ID and the init alone gets the capabilities it needs there.
func attrs() *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID,
		Pdeathsig:  syscall.SIGKILL,
	}
	if os.Geteuid() == 0 {
		return a
	}
	uid, gid := os.Geteuid(), os.Getegid()
	a.Cloneflags |= syscall.CLONE_NEWUSER
	a.UidMappings = []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}}
	a.GidMappings = []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}}
	a.GidMappingsEnableSetgroups = false
	a.AmbientCaps = []uintptr{unix.CAP_NET_ADMIN, unix.CAP_SYS_ADMIN, unix.CAP_NET_BIND_SERVICE}
	return a
}

// Supported says, in one line, why this machine cannot make a sandbox for
// this user, or nil.
func Supported() error {
	if os.Geteuid() == 0 {
		return nil
	}
	read := func(path string) string {
		b, _ := os.ReadFile(path)
		return strings.TrimSpace(string(b))
	}
	if read("/proc/sys/user/max_user_namespaces") == "0" {
		return errors.New("this machine allows no user namespaces (sysctl user.max_user_namespaces=0): raise it (sudo sysctl -w user.max_user_namespaces=15000), or run kubectl cz run as root")
	}
	if read("/proc/sys/kernel/unprivileged_userns_clone") == "0" {
		return errors.New("this machine allows user namespaces to root only (sysctl kernel.unprivileged_userns_clone=0): set it to 1, or run kubectl cz run as root")
	}
	return nil
}

// refusal says why the kernel refused the namespaces, naming the knob.
func refusal(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EINVAL) {
		if s := Supported(); s != nil {
			return s
		}
		if os.Geteuid() != 0 {
			return fmt.Errorf("the kernel refused a user namespace (%v): check sysctl user.max_user_namespaces (also of the namespace this runs in), kernel.unprivileged_userns_clone, kernel.apparmor_restrict_unprivileged_userns; or run kubectl cz run as root", err)
		}
		return fmt.Errorf("the kernel refused new network, mount and PID namespaces: %w", err)
	}
	return fmt.Errorf("start the sandbox: %w", err)
}

// foregroundTerminal: standard input is a terminal whose foreground is this
// process's group, so Ctrl-C reaches the command from the terminal itself.
func foregroundTerminal() bool {
	pgrp, err := unix.IoctlGetInt(0, unix.TIOCGPGRP)
	return err == nil && pgrp == unix.Getpgrp()
}

func exitCode(ps *os.ProcessState, err error) (int, error) {
	if ps == nil {
		return 1, err
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return ps.ExitCode(), nil
}

// call sends a request and reads its reply, with a socket if one came.
func (s *Sandbox) call(req request) (reply, *os.File, error) {
	b, err := encode(req)
	if err != nil {
		return reply{}, nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.ctl.Write(b); err != nil {
		return reply{}, nil, fmt.Errorf("sandbox %s: %w", req.Op, err)
	}
	buf, oob := make([]byte, 64<<10), make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := unix.Recvmsg(int(s.ctl.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return reply{}, nil, fmt.Errorf("sandbox %s: %w", req.Op, err)
	}
	if n == 0 {
		return reply{}, nil, fmt.Errorf("sandbox %s: the sandbox has ended", req.Op)
	}
	var f *os.File
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err == nil && len(msgs) == 1 {
			if fds, err := unix.ParseUnixRights(&msgs[0]); err == nil && len(fds) == 1 {
				f = os.NewFile(uintptr(fds[0]), req.Op+" "+req.Addr)
			}
		}
	}
	var r reply
	if err := json.Unmarshal(buf[:n], &r); err != nil {
		if f != nil {
			f.Close()
		}
		return reply{}, nil, fmt.Errorf("sandbox %s: %w", req.Op, err)
	}
	if r.Err != "" {
		if f != nil {
			f.Close()
		}
		return r, nil, errors.New(r.Err)
	}
	return r, f, nil
}

// AddAddress puts ip on the sandbox's loopback interface.
func (s *Sandbox) AddAddress(ip net.IP) error {
	_, _, err := s.call(request{Op: "addr", IP: ip.String()})
	return err
}

// RemoveAddress takes ip off again.
func (s *Sandbox) RemoveAddress(ip net.IP) error {
	_, _, err := s.call(request{Op: "deladdr", IP: ip.String()})
	return err
}

// Listen listens on addr (TCP) inside the sandbox; this process accepts.
func (s *Sandbox) Listen(addr string) (net.Listener, error) {
	_, f, err := s.call(request{Op: "listen", Addr: addr})
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return net.FileListener(f)
}

// ListenPacket listens on addr (UDP) inside the sandbox.
func (s *Sandbox) ListenPacket(addr string) (net.PacketConn, error) {
	_, f, err := s.call(request{Op: "listenpacket", Addr: addr})
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return net.FilePacketConn(f)
}

// Dial connects to addr (TCP) inside the sandbox: a process the command
// started listens there.
func (s *Sandbox) Dial(_ context.Context, addr string) (net.Conn, error) {
	_, f, err := s.call(request{Op: "dial", Addr: addr})
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return net.FileConn(f)
}

// SetResolvConf gives the command its own /etc/resolv.conf.
func (s *Sandbox) SetResolvConf(content []byte) error {
	_, _, err := s.call(request{Op: "resolv", Content: content})
	return err
}

// relayed are the signals a command is sent (the terminal's among them).
var relayed = []os.Signal{syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGINT, syscall.SIGQUIT}

// RelaySignals takes this process's signals from now on, in one place, so
// none is lost or taken twice around the command's start: until Run asks
// for the command, each goes to early (the caller's stop; nil ignores
// them); from that request on, each goes to the command, the init holding
// it until the command runs (the terminal's own reach it directly).
func (s *Sandbox) RelaySignals(early func(os.Signal)) {
	s.relaying.Do(func() {
		sigs := make(chan os.Signal, 8)
		signal.Notify(sigs, relayed...)
		go func() {
			defer signal.Stop(sigs)
			for {
				select {
				case <-s.exited:
					return
				case sig := <-sigs:
					switch {
					case !s.commanded.Load():
						if early != nil {
							early(sig)
						}
					case s.tty && (sig == syscall.SIGINT || sig == syscall.SIGQUIT):
						// the terminal sent it to the command too
					default:
						_ = s.init.Process.Signal(sig) // the init passes it on
					}
				}
			}
		}()
	})
}

// Run starts the command in the sandbox; Wait tells its end. Signals sent
// to this process pass to the command (RelaySignals).
func (s *Sandbox) Run(argv, env []string, dir string) error {
	s.RelaySignals(nil)
	// Before the request: a command that runs may print before its reply
	// comes, and a signal sent then is its own.
	s.commanded.Store(true)
	if _, _, err := s.call(request{Op: "start", Argv: argv, Env: env, Dir: dir}); err != nil {
		s.commanded.Store(false)
		return fmt.Errorf("start %s: %w", argv[0], err)
	}
	return nil
}

// Wait waits for the command (and so the sandbox) to end and returns its
// exit code, or ctx's end.
func (s *Sandbox) Wait(ctx context.Context) (int, error) {
	select {
	case <-s.exited:
		return s.code, s.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Done is closed once the sandbox has ended.
func (s *Sandbox) Done() <-chan struct{} { return s.exited }

// Signal sends sig to the command (through its init).
func (s *Sandbox) Signal(sig os.Signal) error { return s.init.Process.Signal(sig) }

// Close ends the sandbox at once, and every process in it.
func (s *Sandbox) Close() error {
	_ = s.init.Process.Kill()
	<-s.exited
	s.mu.Lock() // no request reads the socket as it closes
	defer s.mu.Unlock()
	return s.ctl.Close()
}
