// Package agentsecret keeps the connection secret of an in-cluster agent in
// a Secret: the session creates it (journaled, owned by the journal), the
// kubelet hands it to the agent as an environment variable, and the laptop
// reads it through the API to present it on every connection (package
// agent/wire). RBAC on Secrets thus guards the agents on top of RBAC on
// pods/portforward.
package agentsecret

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-cz/kubectl-cz/agent/wire"
	"github.com/kubectl-cz/kubectl-cz/session"
)

// GVR is the resource the session creates.
var GVR = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}

// Create makes a new random secret in Secret ns/name, through the session,
// and returns it.
func Create(ctx context.Context, s *session.Session, primitive, ns, name string, labels map[string]string) (string, error) {
	secret := wire.NewSecret()
	obj := &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{wire.SecretKey: []byte(secret)},
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return "", err
	}
	if _, err := s.Create(ctx, primitive, GVR, &unstructured.Unstructured{Object: m}); err != nil {
		return "", err
	}
	return secret, nil
}

// Read reads the secret from Secret ns/name.
func Read(ctx context.Context, kube kubernetes.Interface, ns, name string) (string, error) {
	sec, err := kube.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsForbidden(err) {
		return "", fmt.Errorf("cannot read the agent's secret (Secret %s/%s): forbidden; kubectl cz needs get on secrets in namespace %s", ns, name, ns)
	}
	if err != nil {
		return "", fmt.Errorf("cannot read the agent's secret (Secret %s/%s): %w", ns, name, err)
	}
	v := string(sec.Data[wire.SecretKey])
	if !wire.ValidSecret(v) {
		return "", fmt.Errorf("secret %s/%s holds no valid agent secret (key %q)", ns, name, wire.SecretKey)
	}
	return v, nil
}

// Env is the agent container's variable that the kubelet fills from the Secret.
func Env(name string) corev1.EnvVar {
	return corev1.EnvVar{Name: wire.SecretEnv, ValueFrom: &corev1.EnvVarSource{
		SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: wire.SecretKey},
	}}
}
