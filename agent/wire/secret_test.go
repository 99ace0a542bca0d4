package wire

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// check runs the agent's side of one connection over a pipe and returns the
// verdict the laptop side saw.
func check(t *testing.T, secret string, laptop func(net.Conn) error) (laptopErr, agentErr error, rest string) {
	t.Helper()
	a, b := net.Pipe()
	done := make(chan error, 1)
	restc := make(chan string, 1)
	go func() {
		err := Check(a, secret, time.Second)
		done <- err
		if err == nil {
			buf := make([]byte, 5)
			n, _ := io.ReadFull(a, buf)
			restc <- string(buf[:n])
		} else {
			restc <- ""
		}
	}()
	laptopErr = laptop(b)
	if laptopErr == nil {
		_, _ = b.Write([]byte("after"))
	}
	agentErr = <-done
	rest = <-restc
	b.Close()
	return
}

func TestRightSecretPassesAndLeavesTheStreamIntact(t *testing.T) {
	s := NewSecret()
	lerr, aerr, rest := check(t, s, func(c net.Conn) error { return Present(context.Background(), c, s) })
	if lerr != nil || aerr != nil || rest != "after" {
		t.Fatalf("laptop %v, agent %v, rest %q", lerr, aerr, rest)
	}
}

func TestWrongMissingOrEndlessSecretIsRefused(t *testing.T) {
	s := NewSecret()
	for name, laptop := range map[string]func(net.Conn) error{
		"another secret": func(c net.Conn) error { return Present(context.Background(), c, NewSecret()) },
		"garbage of the right size": func(c net.Conn) error {
			_, _ = io.WriteString(c, strings.Repeat("x", preambleSz))
			return readVerdict(c)
		},
		"an endless line": func(c net.Conn) error {
			go func() { _, _ = io.WriteString(c, magic+strings.Repeat("a", 1<<20)) }()
			return readVerdict(c)
		},
		"nothing at all": readVerdict,
	} {
		lerr, aerr, _ := check(t, s, laptop)
		if !errors.Is(lerr, ErrRefused) && lerr == nil {
			t.Errorf("%s: laptop saw %v", name, lerr)
		}
		if aerr == nil {
			t.Errorf("%s: the agent accepted it", name)
		}
	}
}

func readVerdict(c net.Conn) error {
	var v [1]byte
	if _, err := io.ReadFull(c, v[:]); err != nil {
		return err
	}
	if v[0] != verdictOK {
		return ErrRefused
	}
	return nil
}

func TestAgentWithoutValidSecretRefusesEveryone(t *testing.T) {
	_, aerr, _ := check(t, "", func(c net.Conn) error { return Present(context.Background(), c, NewSecret()) })
	if aerr == nil {
		t.Fatal("an agent without a secret accepted a connection")
	}
}
