package plugin

import (
	"context"
	"fmt"
	"strings"
	"sync"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// access is one right a primitive needs in its namespace.
type access struct{ verb, group, resource string }

func (a access) String() string {
	if a.group == "" {
		return a.verb + " on " + a.resource
	}
	return a.verb + " on " + a.resource + "." + a.group
}

// Rights whose absence would only show late (a tunnel that never carries a
// byte, an undo that cannot run), checked before anything changes. The
// Roles in deploy/rbac.yaml grant them.
var (
	journalAccess = []access{{"get", "", "configmaps"}, {"list", "", "configmaps"}, {"create", "", "configmaps"}, {"update", "", "configmaps"}, {"delete", "", "configmaps"}}
	tunnelAccess  = access{"create", "", "pods/portforward"}
)

// requireAccess asks the API server, with one SelfSubjectAccessReview per
// right (at once), whether the user has every right listed in ns; the
// first missing one is a one-line error naming it and the Role to bind.
func requireAccess(ctx context.Context, a *clusterAccess, ns, primitive string, rights ...access) error {
	denied := make([]string, len(rights))
	var wg sync.WaitGroup
	for i, r := range rights {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resource, sub, _ := strings.Cut(r.resource, "/")
			review, err := a.Kube.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
				Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
					Namespace: ns, Verb: r.verb, Group: r.group, Resource: resource, Subresource: sub,
				}},
			}, metav1.CreateOptions{})
			// An API server that cannot answer is not a refusal: the
			// primitive's own calls will say what is wrong.
			if err == nil && !review.Status.Allowed {
				denied[i] = r.String()
			}
		}()
	}
	wg.Wait()
	for _, d := range denied {
		if d != "" {
			return fmt.Errorf("kubectl cz %s needs %s in namespace %s, which you do not have: nothing was changed (deploy/rbac.yaml has the Role kubectl-cz-%s)", primitive, d, ns, primitive)
		}
	}
	return nil
}
