// The intercept protocol. The laptop speaks to the interceptor's control
// port over one port-forward connection multiplexed with yamux. After the
// secret (secret.go), it opens the first stream and sends a Hello; the
// agent answers with a Reply. From then on the agent opens a stream to the
// laptop for each intercepted connection; the laptop dials its local port
// and answers with one status byte (StreamOK, or StreamFailed and a line
// saying why) before the bytes flow.

package wire

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"time"

	"github.com/hashicorp/yamux"
)

// Ports the agent uses in its pod.
const (
	ControlPort = 7070
	// FirstListenPort is where the agent listens for the first Service port;
	// the n-th port of the Service is patched to FirstListenPort+n.
	FirstListenPort = 10000
)

// Hello registers a developer's intercept on one Service port.
type Hello struct {
	Developer string `json:"developer"`
	// Port is the Service port's name, or its number when it has no name.
	Port string `json:"port"`
	// All takes every connection of the port (plain TCP, any protocol).
	All bool `json:"all,omitempty"`
	// Match selects the HTTP requests to take when All is false.
	Match Match `json:"match"`
	// Mirror: the matching requests keep going to the cluster, which
	// answers them; the laptop gets a copy, and its answer is dropped.
	Mirror bool `json:"mirror,omitempty"`
	// RecordAnswers: each copy also carries the cluster's answer to the
	// original (MirrorAnswerHeader), for the laptop's recording.
	RecordAnswers bool `json:"recordAnswers,omitempty"`
}

// Reply answers a Hello or a Leave.
type Reply struct {
	Error string `json:"error,omitempty"`
	// Token, in the answer to a Hello, names the developer on the spare
	// connections the laptop opens for the agent (see PoolMagic).
	Token string `json:"token,omitempty"`
	// Remaining is, after a Leave, how many developers still use the agent.
	Remaining int `json:"remaining"`
	// Rules, in the answer to a Hello, says the agent matches paths,
	// methods and regular expressions (rule.go); an older agent would
	// ignore those conditions, so a laptop that set one leaves again.
	Rules bool `json:"rules,omitempty"`
	// Mirrored and Dropped, after a Leave of a mirror, count the copies the
	// laptop got and those dropped (its queue was full, or a body too large).
	Mirrored int64 `json:"mirrored,omitempty"`
	Dropped  int64 `json:"dropped,omitempty"`
}

// Leave, sent on the control stream, unregisters the developer; the reply
// says how many remain, so the last one can restore the Service.
type Leave struct {
	Leave bool `json:"leave"`
}

// Spare connections: besides the yamux tunnel, the laptop keeps a few idle
// port-forward streams open to the control port, each starting with
// PoolMagic and the developer's token on a line. When the agent needs a
// connection to that laptop it takes one, writes PoolGo, and the laptop
// answers with a status byte as on a yamux stream. Such a connection is one
// port-forward stream end to end, without a second multiplexer inside it:
// fewer hand-offs per byte. yamux streams remain the fallback when no spare
// connection is ready.
const (
	PoolMagic byte = 'D'
	PoolGo    byte = 1
)

// Route probe: a control connection that starts with ProbeMagic asks the
// agent whether the Service's own address reaches it yet (kube-proxy on
// its node has switched). The agent sends a request with a token only it
// knows to that address and answers ProbeRouted if its own router saw it,
// ProbeNotYet if the original pods (or nothing) answered.
const (
	ProbeMagic  byte = 'P'
	ProbeRouted byte = 1
	ProbeNotYet byte = 0
	// ProbeHeader carries the token on the probe request.
	ProbeHeader = "X-Cz-Probe"
)

// Count: a control connection that starts with CountMagic asks how many
// developers the agent serves; it answers one byte (255 means 255 or more).
// Whoever closes a crashed developer's environment asks it, so the
// interceptor is removed only when nobody else uses it.
const CountMagic byte = 'N'

// Status bytes the laptop writes first on each stream the agent opens.
const (
	StreamOK     byte = 0
	StreamFailed byte = 1
)

// YamuxConfig is shared by both ends: large windows so one stream can fill
// the port-forward connection, keep-alives to notice a dead tunnel.
func YamuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.MaxStreamWindowSize = 16 << 20
	c.KeepAliveInterval = 10 * time.Second
	c.ConnectionWriteTimeout = 30 * time.Second
	c.StreamOpenTimeout = 30 * time.Second
	c.LogOutput = io.Discard
	return c
}

// MirrorAnswerHeader carries, on a mirror's copy for a developer who
// records (Hello.RecordAnswers), the cluster's answer to the original
// request: EncodeAnswer's text. The laptop takes it off before the copy
// reaches its local server.
const MirrorAnswerHeader = "X-Cz-Cluster-Answer"

// MirrorAnswer is the cluster's answer to a mirrored request.
type MirrorAnswer struct {
	Status    int         `json:"status"`
	Header    http.Header `json:"header"`
	Body      []byte      `json:"body,omitempty"`
	Truncated bool        `json:"truncated,omitempty"`
}

// EncodeAnswer makes an answer a header value.
func EncodeAnswer(a MirrorAnswer) string {
	b, _ := json.Marshal(a)
	return base64.RawStdEncoding.EncodeToString(b)
}

// DecodeAnswer reads a header value of EncodeAnswer's.
func DecodeAnswer(s string) (MirrorAnswer, error) {
	var a MirrorAnswer
	b, err := base64.RawStdEncoding.DecodeString(s)
	if err != nil {
		return a, err
	}
	return a, json.Unmarshal(b, &a)
}
