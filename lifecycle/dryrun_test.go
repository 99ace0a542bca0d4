package lifecycle

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kubectl-cz/kubectl-cz/session"
)

// planned is a part with a plan, rights, a preparation and an admission.
type planned struct {
	name              string
	rights            []Right
	prepErr, admitErr error
	admitted          *bool
}

func (p *planned) Name() string { return p.name }
func (p *planned) Run(context.Context, *session.Session, func()) error {
	return errors.New("a dry run runs nothing")
}
func (p *planned) Needs() []Right                { return p.rights }
func (p *planned) Prepare(context.Context) error { return p.prepErr }
func (p *planned) Plan() []string                { return []string{"would change " + p.name} }
func (p *planned) Admit(context.Context) error   { *p.admitted = true; return p.admitErr }

// The dry run says what each part would change, skips the admission check
// of a part lacking a right (RBAC's refusal would hide the right), names
// the missing rights, and fails naming the first problem.
func TestDryRunNamesPlansAndMissingRights(t *testing.T) {
	kube := fake.NewClientset()
	kube.PrependReactor("create", "selfsubjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		r := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview)
		r.Status.Allowed = r.Spec.ResourceAttributes.Resource != "secrets"
		return true, r, nil
	})
	var admittedA, admittedB, admittedC bool
	a := &planned{name: "a", rights: Rights("alpha", "ns", [3]string{"create", "", "services"}), admitted: &admittedA}
	b := &planned{name: "b", rights: Rights("beta", "ns", [3]string{"create", "", "secrets"}), admitted: &admittedB}
	c := &planned{name: "c", prepErr: errors.New("no such workload"), admitted: &admittedC}
	var out bytes.Buffer
	err := DryRun(context.Background(), kube, &out, []Part{a, b, c})
	for _, want := range []string{"[1/3] a", "would change a", "admitted by the API server", "[3/3] c", "cannot start: no such workload",
		"rights: 1 of 2 missing", "beta needs create on secrets in namespace ns"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no %q in:\n%s", want, out.String())
		}
	}
	if !admittedA || admittedB || admittedC {
		t.Errorf("admission checked: a %v, b %v (lacks a right), c %v (cannot start)", admittedA, admittedB, admittedC)
	}
	if err == nil || !strings.Contains(err.Error(), "1 parts cannot start, 1 rights missing") || !strings.Contains(err.Error(), "no such workload") {
		t.Errorf("error: %v", err)
	}
	out.Reset()
	if err := DryRun(context.Background(), kube, &out, []Part{a}); err != nil {
		t.Errorf("a part that can start: %v\n%s", err, out.String())
	}
}
