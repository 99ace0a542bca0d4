package session

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"unicode"

	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Kind is an entry kind: how to check and undo its entries. Primitives
// register theirs from init, beside the code that makes the change.
type Kind struct {
	Name string
	// Local kinds change this machine (addresses, files, mounts): only the
	// local journal may hold them, never a ConfigMap, which anyone with
	// ConfigMap rights in the namespace could have written.
	Local bool
	// Check validates an entry's data before any entry of a close is
	// undone, so a journal edited by hand changes nothing.
	Check func(Entry) error
	// Undo puts the change back (see Undo).
	Undo Undo
	// Describe says what an entry (already checked) did, for session show
	// and graph; nil: the kind's name says it.
	Describe func(Entry) Alteration
	// Many, if set, is one line for n undone entries of the kind, said
	// instead of their own lines when a close undoes more than manyLines
	// of them (a teleport of 1,000 Services removes 1,000 addresses).
	Many func(n int) string
}

// manyLines: up to this many undone entries of a kind with Many report one
// line each.
const manyLines = 10

// Alteration is what one entry did to the service graph or the laptop, in
// terms a reader of the graph knows.
type Alteration struct {
	// Text is one line for people: "patched service sample-project/core: spec.selector".
	Text string `json:"text"`
	// Namespaces are those the entry concerns (a teleport's; an object's).
	Namespaces []string `json:"namespaces,omitempty"`
	// Service is the Service it alters or stands in for, if any.
	Service string `json:"service,omitempty"`
	// Workload is the workload or pod it concerns, as KIND/NAME.
	Workload string `json:"workload,omitempty"`
	// Role says how the graph draws it: intercepted, member, developer,
	// mounted, teleported, standin, local; empty for the rest.
	Role string `json:"role,omitempty"`
	// Short labels it in a picture (lines split by newlines); Text if empty.
	Short string `json:"short,omitempty"`
	// Joins is another session this entry takes part in (an environment's
	// share of a Service's intercept), to show with it.
	Joins string `json:"joins,omitempty"`
}

// Describe says what an entry did.
func Describe(e Entry) Alteration {
	k := kindOf(e.Kind)
	if k.Describe == nil || checkEntry(e) != nil {
		a := Alteration{Text: e.Kind}
		if e.Namespace != "" {
			a.Namespaces = []string{e.Namespace}
		}
		return a
	}
	a := k.Describe(e)
	if len(a.Namespaces) == 0 && e.Namespace != "" {
		a.Namespaces = []string{e.Namespace}
	}
	// A journal's values are anyone's who may write ConfigMaps: no control
	// character (a terminal escape) reaches the screen through them.
	a.Text, a.Short = printable(a.Text), printable(a.Short)
	return a
}

// printable replaces control characters but newlines with '?'.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r != '\n' && (unicode.IsControl(r) || r == unicode.ReplacementChar) {
			return '?'
		}
		return r
	}, s)
}

// Undo is what an entry kind registers to put its change back. It must be
// idempotent and accept an entry whose change never happened (state
// Recorded), since a crash can come between Record and the change.
type Undo func(ctx context.Context, u *UndoContext, e Entry) error

// Scope is what a primitive's object.created and object.patched entries may
// touch: entries outside it are refused before anything is undone.
type Scope struct {
	// Creates lists the resources it creates (and so may delete).
	Creates []schema.GroupResource
	// Patches lists, per resource, the field paths it may set back.
	Patches map[schema.GroupResource][][]string
	// PatchRole is what a Service it patches becomes, for the graph
	// ("intercepted").
	PatchRole string
}

var (
	registryMu sync.RWMutex
	kinds      = map[string]Kind{}
	scopes     = map[string]Scope{}
)

// RegisterKind makes a kind of entry restorable.
func RegisterKind(k Kind) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := kinds[k.Name]; dup || k.Undo == nil {
		panic("session: kind registered twice or without an undo: " + k.Name)
	}
	kinds[k.Name] = k
}

// RegisterScope declares what a primitive's object entries may touch.
func RegisterScope(primitive string, s Scope) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := scopes[primitive]; dup {
		panic("session: scope registered twice for " + primitive)
	}
	scopes[primitive] = s
}

func kindOf(name string) Kind {
	registryMu.RLock()
	defer registryMu.RUnlock()
	return kinds[name]
}

func scopeOf(primitive string) (Scope, bool) {
	registryMu.RLock()
	defer registryMu.RUnlock()
	s, ok := scopes[primitive]
	return s, ok
}

// checkEntry is every check an entry passes before a close undoes anything.
func checkEntry(e Entry) error {
	k := kindOf(e.Kind)
	switch {
	case k.Undo == nil:
		return fmt.Errorf("%w: kind %q, which this kubectl-cz cannot undo (was it written by a newer version?)", ErrCorrupt, e.Kind)
	case k.Local && e.Namespace != "":
		return fmt.Errorf("%w: kind %q changes a laptop, and only this machine's local journal may hold it, not a journal in the cluster", ErrCorrupt, e.Kind)
	case !k.Local && e.Namespace == "":
		return fmt.Errorf("%w: kind %q belongs in a cluster journal, not in the local one", ErrCorrupt, e.Kind)
	}
	if k.Check != nil {
		if err := k.Check(e); err != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
	}
	return nil
}

// inScope checks an object entry against its primitive's scope.
func inScope(e Entry, ref ObjectRef, paths [][]string) error {
	if ref.Namespace != e.Namespace {
		return fmt.Errorf("%s is not in the journal's namespace %s", ref, e.Namespace)
	}
	scope, ok := scopeOf(e.Primitive)
	if !ok {
		return fmt.Errorf("primitive %q declares no objects it may touch", e.Primitive)
	}
	gr := schema.GroupResource{Group: ref.Group, Resource: ref.Resource}
	if paths == nil {
		if !slices.Contains(scope.Creates, gr) {
			return fmt.Errorf("primitive %q does not create %s", e.Primitive, gr)
		}
		return nil
	}
	allowed, ok := scope.Patches[gr]
	if !ok {
		return fmt.Errorf("primitive %q does not patch %s", e.Primitive, gr)
	}
	for _, p := range paths {
		if !slices.ContainsFunc(allowed, func(a []string) bool { return slices.Equal(a, p) }) && !slices.Equal(p, markPath) {
			return fmt.Errorf("primitive %q does not patch field %s of %s", e.Primitive, strings.Join(p, "."), gr)
		}
	}
	return nil
}
