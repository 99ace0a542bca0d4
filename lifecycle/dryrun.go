package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"io"

	"k8s.io/client-go/kubernetes"
)

// DryRun prints, part by part, what each would change and whether it
// could start, and which rights the parts need that the user lacks,
// changing nothing: rights through SelfSubjectAccessReviews, admission
// through each part's server-side dry run. It fails when anything would
// stop the environment, naming the first problem.
func DryRun(ctx context.Context, kube kubernetes.Interface, out io.Writer, parts []Part) error {
	// The rights first: a part lacking one is refused its dry run by RBAC,
	// which the missing right says better than the refusal would.
	rights := needs(parts)
	seen := map[Right]bool{}
	var missing []Right
	lacking := map[string]bool{} // primitives with a missing right
	for _, r := range Denied(ctx, kube, rights) {
		if !seen[r] {
			seen[r] = true
			missing = append(missing, r)
			lacking[r.Primitive] = true
		}
	}
	var problems []string
	for i, p := range parts {
		fmt.Fprintf(out, "[%d/%d] %s\n", i+1, len(parts), p.Name())
		if pr, ok := p.(Preparer); ok {
			if err := pr.Prepare(ctx); err != nil {
				fmt.Fprintf(out, "      cannot start: %v\n", err)
				problems = append(problems, fmt.Sprintf("%s: %v", p.Name(), err))
				continue
			}
		}
		if pl, ok := p.(Planner); ok {
			for _, line := range pl.Plan() {
				fmt.Fprintf(out, "      %s\n", line)
			}
		}
		ad, ok := p.(Admitter)
		if !ok || partLacks(p, lacking) {
			continue
		}
		if err := ad.Admit(ctx); err != nil {
			fmt.Fprintf(out, "      cannot start: %v\n", err)
			problems = append(problems, fmt.Sprintf("%s: %v", p.Name(), err))
		} else {
			fmt.Fprintln(out, "      admitted by the API server (server-side dry run)")
		}
	}
	if len(missing) == 0 {
		fmt.Fprintf(out, "rights: the API server grants all %d that the parts need\n", len(rights))
	} else {
		fmt.Fprintf(out, "rights: %d of %d missing:\n", len(missing), len(rights))
		for _, r := range missing {
			fmt.Fprintf(out, "      %s needs %s in namespace %s (deploy/rbac.yaml: Role kubectl-cz-%s)\n", r.Primitive, r, r.Namespace, r.Primitive)
		}
		problems = append(problems, RightError(missing[0]).Error())
	}
	switch {
	case len(problems) == 0:
		return nil
	case len(problems) == 1 && len(missing) <= 1:
		return errors.New(problems[0])
	}
	if failed := len(problems) - min(len(missing), 1); failed > 0 {
		return fmt.Errorf("the environment would not start (%d parts cannot start, %d rights missing, above); the first: %s", failed, len(missing), problems[0])
	}
	return fmt.Errorf("the environment would not start (%d rights missing, above); the first: %s", len(missing), problems[0])
}

// partLacks says whether a part needs a right of a primitive that lacks one.
func partLacks(p Part, lacking map[string]bool) bool {
	n, ok := p.(Needer)
	if !ok {
		return false
	}
	for _, r := range n.Needs() {
		if lacking[r.Primitive] {
			return true
		}
	}
	return false
}
