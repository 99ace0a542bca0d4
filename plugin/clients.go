package plugin

import (
	"context"
	"fmt"
	"os"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubectl-cz/kubectl-cz/lifecycle"
	"github.com/kubectl-cz/kubectl-cz/session"
)

// clusterAccess is what commands that talk to the cluster resolve from the
// kubeconfig flags.
type clusterAccess struct {
	session.Clients
	Namespace string // -n, else the context's namespace, else "default"
	Server    string
	// ExplicitNamespace is true when -n was given (or the context names one).
	ExplicitNamespace bool
}

func resolveAccess(flags *genericclioptions.ConfigFlags) (*clusterAccess, error) {
	cfg, err := flags.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("cannot load the kubeconfig: %w", err)
	}
	ns, explicit, err := flags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, fmt.Errorf("cannot load the kubeconfig: %w", err)
	}
	// A command's start asks a few dozen things at once (the rights it
	// needs, the session's journals): client-go's default of 5 requests a
	// second would stall it and print throttling notices.
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = 50, 100
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &clusterAccess{Clients: session.Clients{Kube: kube, Dynamic: dyn, Rest: cfg}, Namespace: ns, Server: cfg.Host, ExplicitNamespace: explicit}, nil
}

// whoAmI is the cluster's name for the user (SelfSubjectReview), falling back
// to the kubeconfig's user entry when the cluster does not say.
func whoAmI(ctx context.Context, a *clusterAccess, flags *genericclioptions.ConfigFlags) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	review, err := a.Kube.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err == nil && review.Status.UserInfo.Username != "" {
		return review.Status.UserInfo.Username
	}
	if raw, err := flags.ToRawKubeConfigLoader().RawConfig(); err == nil {
		if c, ok := raw.Contexts[raw.CurrentContext]; ok && c.AuthInfo != "" {
			return c.AuthInfo
		}
	}
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "unknown"
}

// openSession starts or joins (--session NAME) a session for a primitive,
// owned by this user, host and process.
// lifecycleConfig runs a command's primitives in session id (empty: a new
// one), announcing it with what to do should this process die (hint, with
// %[1]s for the session's ID).
func lifecycleConfig(a *clusterAccess, flags *genericclioptions.ConfigFlags, id string, streams genericiooptions.IOStreams, hint string) lifecycle.Config {
	return lifecycle.Config{
		Clients: a.Clients, StateDir: session.DefaultStateDir(), Heartbeat: heartbeatInterval, Out: streams.Out, ErrOut: streams.ErrOut,
		Open: func(ctx context.Context) (*session.Session, error) {
			return openSession(ctx, a, flags, id, session.Config{})
		},
		Opened: func(s *session.Session) {
			fmt.Fprintf(streams.Out, "session %s (if this process dies"+hint+")\n", s.ID())
		},
	}
}

func openSession(ctx context.Context, a *clusterAccess, flags *genericclioptions.ConfigFlags, id string, hooks session.Config) (*session.Session, error) {
	host, _ := os.Hostname()
	return session.Open(session.Config{
		Clients:      a.Clients,
		ID:           id,
		Owner:        session.Owner{User: whoAmI(ctx, a, flags), Host: host, PID: os.Getpid()},
		Cluster:      a.Server,
		StateDir:     session.DefaultStateDir(),
		AfterRecord:  hooks.AfterRecord,
		AfterApplied: hooks.AfterApplied,
	})
}
