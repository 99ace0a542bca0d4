package lifecycle

import (
	"context"
	"fmt"
	"strings"
	"sync"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Right is one right a primitive needs in a namespace, checked before
// anything changes, since its absence would only show late (a tunnel that
// never carries a byte, an undo that cannot run). The Roles in
// deploy/rbac.yaml grant them, one per primitive.
type Right struct {
	Primitive string // whose Role grants it: kubectl-cz-<primitive>
	Namespace string
	Verb      string
	Group     string
	Resource  string // resource or resource/subresource
}

func (r Right) String() string {
	if r.Group == "" {
		return r.Verb + " on " + r.Resource
	}
	return r.Verb + " on " + r.Resource + "." + r.Group
}

// Rights builds rights of one primitive in one namespace from
// "verb group resource" triples ("" group: the core API).
func Rights(primitive, ns string, triples ...[3]string) []Right {
	out := make([]Right, len(triples))
	for i, t := range triples {
		out[i] = Right{Primitive: primitive, Namespace: ns, Verb: t[0], Group: t[1], Resource: t[2]}
	}
	return out
}

// JournalRights are what a session's cluster journal needs.
var JournalRights = [][3]string{{"get", "", "configmaps"}, {"list", "", "configmaps"}, {"create", "", "configmaps"}, {"update", "", "configmaps"}, {"delete", "", "configmaps"}}

// TunnelRight is what a port-forward needs.
var TunnelRight = [3]string{"create", "", "pods/portforward"}

// Denied asks the API server, with one SelfSubjectAccessReview per right
// (all at once), which of the rights the user lacks, in the order given.
// An API server that cannot answer is not a refusal: the primitive's own
// calls will say what is wrong.
func Denied(ctx context.Context, kube kubernetes.Interface, rights []Right) []Right {
	denied := make([]bool, len(rights))
	var wg sync.WaitGroup
	for i, r := range rights {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resource, sub, _ := strings.Cut(r.Resource, "/")
			review, err := kube.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
				Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
					Namespace: r.Namespace, Verb: r.Verb, Group: r.Group, Resource: resource, Subresource: sub,
				}},
			}, metav1.CreateOptions{})
			denied[i] = err == nil && !review.Status.Allowed
		}()
	}
	wg.Wait()
	var out []Right
	for i, d := range denied {
		if d {
			out = append(out, rights[i])
		}
	}
	return out
}

// RightError is the one-line refusal for a missing right.
func RightError(r Right) error {
	return fmt.Errorf("kubectl cz %s needs %s in namespace %s, which you do not have: nothing was changed (deploy/rbac.yaml has the Role kubectl-cz-%s)", r.Primitive, r, r.Namespace, r.Primitive)
}

// Require fails with the first right the user lacks.
func Require(ctx context.Context, kube kubernetes.Interface, rights ...Right) error {
	if d := Denied(ctx, kube, rights); len(d) > 0 {
		return RightError(d[0])
	}
	return nil
}
