//go:build cztest

package plugin

// The test primitive exists only in builds with the cztest tag (the e2e
// tests build one): it alters the cluster and the laptop through the session
// package the way real primitives do, and can stop dead at a chosen journal
// step so tests can kill it there.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-cz/kubectl-cz/lifecycle"
	"github.com/kubectl-cz/kubectl-cz/session"
)

const testFileKind = "test.file"

func init() {
	extraCommands = append(extraCommands, newTestPrimitiveCommand)
	session.RegisterKind(session.Kind{Name: testFileKind, Local: true, Undo: undoTestFile})
	session.RegisterScope("test", session.Scope{
		Creates: []schema.GroupResource{{Resource: "configmaps"}},
		Patches: map[schema.GroupResource][][]string{{Resource: "services"}: {{"spec", "selector"}}},
	})
}

// testFileData is a laptop-side entry: a file and its content before.
type testFileData struct {
	Path     string  `json:"path"`
	Original *string `json:"original"` // nil: the file did not exist
}

func undoTestFile(_ context.Context, u *session.UndoContext, e session.Entry) error {
	var d testFileData
	if err := json.Unmarshal(e.Data, &d); err != nil {
		return err
	}
	if d.Original == nil {
		if err := os.Remove(d.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	} else if err := os.WriteFile(d.Path, []byte(*d.Original), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(u.Log, "restored %s\n", d.Path)
	return nil
}

func newTestPrimitiveCommand(flags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	var service, sessionID, localFile, stopAt string
	cmd := &cobra.Command{
		Use:    "test-primitive --service NAME",
		Short:  "Test-only primitive: creates a ConfigMap, patches a Service's selector, alters a local file",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(c.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			a, err := resolveAccess(flags)
			if err != nil {
				return err
			}
			lifecycle.Recover(ctx, a.Clients, session.DefaultStateDir(), streams.ErrOut)
			// --stop-at record:N or applied:N blocks the process right after
			// the N-th entry reaches that state, for a test to kill -9 it.
			counts := map[string]int{}
			hook := func(stage string) func(session.Entry) {
				return func(session.Entry) {
					counts[stage]++
					if stopAt == fmt.Sprintf("%s:%d", stage, counts[stage]) {
						fmt.Fprintf(streams.Out, "stopped at %s\n", stopAt)
						select {}
					}
				}
			}
			s, err := openSession(ctx, a, flags, sessionID, session.Config{AfterRecord: hook("record"), AfterApplied: hook("applied")})
			if err != nil {
				return err
			}
			fmt.Fprintf(streams.Out, "session %s\n", s.ID())
			if err := alter(ctx, s, a.Namespace, service, localFile); err != nil {
				if _, cerr := s.Close(context.Background(), session.CloseOptions{Log: streams.ErrOut}); cerr != nil {
					err = fmt.Errorf("%w (and undoing: %v)", err, cerr)
				}
				return err
			}
			fmt.Fprintln(streams.Out, "ready")
			go s.KeepAlive(ctx, heartbeatInterval, func(err error) { fmt.Fprintln(streams.ErrOut, "heartbeat:", err) })
			<-ctx.Done()
			res, err := s.Close(context.Background(), session.CloseOptions{Log: streams.Out})
			if err != nil {
				return err
			}
			fmt.Fprintf(streams.Out, "closed: %d undone\n", res.Undone)
			return nil
		},
	}
	cmd.Flags().StringVar(&service, "service", "", "Service whose selector to patch")
	cmd.Flags().StringVar(&sessionID, "session", "", "Join this session")
	cmd.Flags().StringVar(&localFile, "local-file", "", "Also overwrite this local file (a laptop-side entry)")
	cmd.Flags().StringVar(&stopAt, "stop-at", "", "Block after record:N or applied:N")
	return cmd
}

func alter(ctx context.Context, s *session.Session, ns, service, localFile string) error {
	cm := &unstructured.Unstructured{}
	cm.SetAPIVersion("v1")
	cm.SetKind("ConfigMap")
	cm.SetNamespace(ns)
	cm.SetName("cz-test-" + s.ID())
	_ = unstructured.SetNestedStringMap(cm.Object, map[string]string{"made-by": "test-primitive"}, "data")
	if _, err := s.Create(ctx, "test", schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, cm); err != nil {
		return err
	}
	if service != "" {
		ref := session.ObjectRef{Version: "v1", Resource: "services", Kind: "Service", Namespace: ns, Name: service}
		_, err := s.Patch(ctx, "test", ref, [][]string{{"spec", "selector"}}, func(u *unstructured.Unstructured) error {
			return unstructured.SetNestedStringMap(u.Object, map[string]string{"cz-test": s.ID()}, "spec", "selector")
		})
		if err != nil {
			return err
		}
	}
	if localFile != "" {
		d := testFileData{Path: localFile}
		if b, err := os.ReadFile(localFile); err == nil {
			orig := string(b)
			d.Original = &orig
		}
		e, err := s.Record(ctx, testFileKind, "test", "", d)
		if err != nil {
			return err
		}
		if err := os.WriteFile(localFile, []byte("altered by session "+s.ID()+"\n"), 0o644); err != nil {
			return err
		}
		if _, err := s.Applied(ctx, e, nil); err != nil {
			return err
		}
	}
	return nil
}
