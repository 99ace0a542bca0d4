// Package wire is what the laptop and the in-cluster agents both speak
// before anything else on a connection: a fixed-size preamble carrying the
// agent's secret, and the agent's one-byte verdict on it.
//
// The agents listen on the pod's loopback only, so only port-forward (and
// with it Kubernetes RBAC on pods/portforward) reaches them. The secret is a
// second factor: it lives in a Secret the session created, which the laptop
// reads through the API and the kubelet hands to the agent as an
// environment variable, so someone who may port-forward but not read that
// Secret (or another container of a mounted pod, unless the pod shares
// its process namespace, which lets it read the agent's environment) is
// still refused.
package wire

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

const (
	// SecretEnv is the agent's environment variable holding the secret.
	SecretEnv = "CZ_AGENT_SECRET"
	// SecretKey is the key of the secret in its Secret object.
	SecretKey = "secret"

	magic      = "CZ1 "
	secretLen  = 64 // hex of 32 random bytes
	preambleSz = len(magic) + secretLen + 1

	verdictOK      byte = 0
	verdictRefused byte = 1
)

// ErrRefused is the agent's answer to a wrong or missing secret.
var ErrRefused = errors.New("the agent refused this connection's secret")

// NewSecret is a fresh random secret.
func NewSecret() string {
	b := make([]byte, secretLen/2)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

// ValidSecret reports whether s has the shape NewSecret gives.
func ValidSecret(s string) bool {
	if len(s) != secretLen {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// Present is the laptop's side: it sends the secret and waits for the
// agent's verdict. The connection carries the agent's protocol after it.
// Port-forward streams have no deadlines: the connection is closed if ctx
// ends before the verdict.
func Present(ctx context.Context, c net.Conn, secret string) (err error) {
	if !ValidSecret(secret) {
		return errors.New("the agent's secret is malformed (was its Secret edited?)")
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer func() {
		if !stop() && err == nil {
			err = ctx.Err() // ctx closed the connection meanwhile
		}
	}()
	if _, err := io.WriteString(c, magic+secret+"\n"); err != nil {
		return fmt.Errorf("send the agent's secret: %w", err)
	}
	var verdict [1]byte
	if _, err := io.ReadFull(c, verdict[:]); err != nil {
		return fmt.Errorf("the agent did not answer: %w", err)
	}
	if verdict[0] != verdictOK {
		return ErrRefused
	}
	return nil
}

// Check is the agent's side: it reads exactly one preamble (never more,
// whatever the peer sends), within timeout, and answers it. A connection
// that fails the check is answered, then closed.
func Check(c net.Conn, secret string, timeout time.Duration) error {
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	defer c.SetReadDeadline(time.Time{})
	var buf [preambleSz]byte
	_, err := io.ReadFull(c, buf[:])
	ok := err == nil && string(buf[:len(magic)]) == magic && buf[preambleSz-1] == '\n' &&
		ValidSecret(secret) && subtle.ConstantTimeCompare(buf[len(magic):preambleSz-1], []byte(secret)) == 1
	if !ok {
		_, _ = c.Write([]byte{verdictRefused})
		c.Close()
		if err != nil {
			return fmt.Errorf("no secret: %w", err)
		}
		return ErrRefused
	}
	if _, err := c.Write([]byte{verdictOK}); err != nil {
		c.Close()
		return err
	}
	return nil
}
