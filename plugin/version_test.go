package plugin

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	fakediscovery "k8s.io/client-go/discovery/fake"
	kubetesting "k8s.io/client-go/testing"
	"sigs.k8s.io/yaml"
)

func runVersion(t *testing.T, o *VersionOptions) (string, error) {
	t.Helper()
	streams, _, out, _ := genericiooptions.NewTestIOStreams()
	o.IOStreams = streams
	cmd, _, err := NewRootCommand(streams).Find([]string{"version"})
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Validate(cmd); err != nil {
		return "", err
	}
	err = o.Run()
	return out.String(), err
}

func fakeServer(gitVersion string) *fakediscovery.FakeDiscovery {
	fd := &fakediscovery.FakeDiscovery{Fake: &kubetesting.Fake{}}
	fd.FakedServerVersion = &version.Info{GitVersion: gitVersion, Major: "1", Minor: "37"}
	return fd
}

func TestVersionText(t *testing.T) {
	Version, GitCommit = "v1.2.3", "abc123"
	out, err := runVersion(t, &VersionOptions{discovery: fakeServer("v1.37.2")})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "Client Version: v1.2.3 (commit abc123)") || !strings.Contains(out, "Server Version: v1.37.2") {
		t.Fatalf("output:\n%s", out)
	}
}

func TestVersionJSONAndYAML(t *testing.T) {
	Version = "v1.2.3"
	for _, format := range []string{"json", "yaml"} {
		out, err := runVersion(t, &VersionOptions{Output: format, discovery: fakeServer("v1.37.2")})
		if err != nil {
			t.Fatal(err)
		}
		var info VersionInfo
		if format == "json" {
			err = json.Unmarshal([]byte(out), &info)
		} else {
			err = yaml.Unmarshal([]byte(out), &info)
		}
		if err != nil {
			t.Fatalf("%s: %v\n%s", format, err, out)
		}
		if info.ClientVersion.Version != "v1.2.3" || info.ServerVersion == nil || info.ServerVersion.GitVersion != "v1.37.2" {
			t.Fatalf("%s: %+v", format, info)
		}
	}
}

func TestVersionClientOnlyDoesNotNeedAServer(t *testing.T) {
	out, err := runVersion(t, &VersionOptions{ClientOnly: true, Output: "json"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "serverVersion") {
		t.Fatalf("client-only output has a server version:\n%s", out)
	}
}

func TestVersionServerErrorKeepsClientVersion(t *testing.T) {
	fd := fakeServer("")
	fd.PrependReactor("get", "version", func(kubetesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("connection refused")
	})
	out, err := runVersion(t, &VersionOptions{discovery: fd})
	if err == nil || !strings.Contains(err.Error(), "connection refused") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("err = %v: want one line with the cause", err)
	}
	if !strings.Contains(out, "Client Version:") {
		t.Fatalf("client version missing:\n%s", out)
	}
}

func TestVersionRejectsUnknownOutput(t *testing.T) {
	_, err := runVersion(t, &VersionOptions{Output: "xml", discovery: fakeServer("v1")})
	var ue *errUsage
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "kubectl cz version -h") {
		t.Fatalf("err = %v: want a usage error pointing at the help", err)
	}
}

func TestRootUsageSaysKubectlCz(t *testing.T) {
	streams, _, out, errOut := genericiooptions.NewTestIOStreams()
	root := NewRootCommand(streams)
	root.SetArgs([]string{"version", "-h"})
	if code := Execute(root, streams); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(out.String(), "kubectl cz version [flags]") || strings.Contains(out.String(), "  kubectl-cz ") {
		t.Fatalf("usage:\n%s", out)
	}
	for _, flag := range []string{"--namespace", "--context", "--kubeconfig", "--as"} {
		if !strings.Contains(out.String(), flag) {
			t.Errorf("usage lacks kubeconfig flag %s", flag)
		}
	}
}

func TestExecuteUnknownFlagIsUsageError(t *testing.T) {
	streams, _, _, errOut := genericiooptions.NewTestIOStreams()
	root := NewRootCommand(streams)
	root.SetArgs([]string{"version", "--bogus"})
	if code := Execute(root, streams); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	if got := errOut.String(); strings.Count(got, "\n") != 1 || !strings.HasPrefix(got, "error: unknown flag: --bogus") {
		t.Fatalf("stderr %q", got)
	}
}
