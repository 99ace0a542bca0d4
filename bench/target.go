package main

import (
	"context"
	_ "embed"
	"fmt"
	"os/exec"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
)

//go:embed fixture.yaml
var fixture string

// deployTarget applies the fixture (a no-op when it runs already) and waits
// until the pod made its files; it returns the pod IP.
func deployTarget(ctx context.Context, cs kubernetes.Interface) (string, error) {
	cmd := exec.CommandContext(ctx, "kubectl", "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(fixture)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("apply the bench fixture: %v: %s", err, out)
	}
	var ip string
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods(benchNamespace).Get(ctx, benchPod, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				ip = p.Status.PodIP
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return "", fmt.Errorf("bench pod not ready (kubectl -n %s describe pod %s): %w", benchNamespace, benchPod, err)
	}
	return ip, nil
}
