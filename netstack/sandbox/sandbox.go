// Package sandbox runs one command in a network of its own, on this
// machine but apart from it: new network, mount and PID namespaces, and a
// user namespace when not root, so no privilege is needed. kubectl cz run
// puts teleport's addresses and listeners there and points the command's
// resolver at the shim: the cluster's names answer for that process and its
// children alone, and nothing on this machine changes (no address, no
// resolver line, nothing to put back after a crash).
//
// The sandbox's first process is this same binary (Init), PID 1 of its PID
// namespace: it makes sockets and addresses inside for the plugin, starts
// the command and passes signals to it. It dies with kubectl cz
// (Pdeathsig), and the kernel ends every process of the namespace with it.
package sandbox

import (
	"encoding/json"
	"fmt"
)

// initEnv marks the re-executed binary as a sandbox's init.
const initEnv = "KUBECTL_CZ_SANDBOX_INIT"

// ttyEnv tells the init that the terminal's signals (Ctrl-C, Ctrl-\) reach
// the command directly, so it must not pass them on a second time.
const ttyEnv = "KUBECTL_CZ_SANDBOX_TTY"

// request is one message from the plugin to the init, over a SEQPACKET
// socket: one message, one request.
type request struct {
	Op string `json:"op"` // addr, deladdr, listen, listenpacket, dial, resolv, start
	// IP for addr and deladdr; Addr (host:port) for listen, listenpacket, dial.
	IP   string `json:"ip,omitempty"`
	Addr string `json:"addr,omitempty"`
	// Content of the command's /etc/resolv.conf.
	Content []byte `json:"content,omitempty"`
	// The command: argv, environment, folder.
	Argv []string `json:"argv,omitempty"`
	Env  []string `json:"env,omitempty"`
	Dir  string   `json:"dir,omitempty"`
}

// reply answers a request; a socket comes with it as SCM_RIGHTS.
type reply struct {
	Err string `json:"err,omitempty"`
	PID int    `json:"pid,omitempty"`
}

// maxMessage bounds a message: the command's environment is the largest.
const maxMessage = 1 << 20

func encode(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	if len(b) > maxMessage {
		return nil, fmt.Errorf("sandbox message of %d bytes: over %d", len(b), maxMessage)
	}
	return b, nil
}

// ErrExit is the command's end: its exit code, or 128+N for signal N, as a
// shell reports it. kubectl cz run exits with it.
type ErrExit struct{ Code int }

func (e *ErrExit) Error() string { return fmt.Sprintf("the command exited with code %d", e.Code) }

// ExitStatus is the code to exit with.
func (e *ErrExit) ExitStatus() int { return e.Code }
