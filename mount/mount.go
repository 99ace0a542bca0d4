// Package mount is the laptop half of `kubectl cz mount`: it adds the
// agent's file server to the target pod as an ephemeral container with the
// target container's volume mounts (so emptyDir, PVC, ConfigMap and Secret
// volumes all appear, also on images without a shell), reaches it over
// port-forward and serves it as a local folder with fusefs.
package mount

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pkg/sftp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/kubectl-cz/kubectl-cz/agent/files"
	"github.com/kubectl-cz/kubectl-cz/agent/wire"
	"github.com/kubectl-cz/kubectl-cz/agentsecret"
	"github.com/kubectl-cz/kubectl-cz/fusefs"
	"github.com/kubectl-cz/kubectl-cz/lifecycle"
	"github.com/kubectl-cz/kubectl-cz/netstack/localnet"
	"github.com/kubectl-cz/kubectl-cz/pfconn"
	"github.com/kubectl-cz/kubectl-cz/session"
)

// Entry kinds.
const (
	// KindAgent is the ephemeral container: Kubernetes cannot remove one,
	// so its undo only reports it; the file server ends itself when idle.
	KindAgent = "mount.agent"
	// KindMount is the local FUSE mount; its undo unmounts it (after a
	// crash, a dead FUSE server leaves a mount that answers nothing).
	KindMount = "mount.fuse"
)

func init() {
	session.RegisterKind(session.Kind{Name: KindAgent, Check: func(e session.Entry) error {
		var d agentData
		if err := json.Unmarshal(e.Data, &d); err != nil || d.Pod == "" || !strings.HasPrefix(d.Container, agentPrefix) {
			return fmt.Errorf("a mount agent entry without a pod or a file server container")
		}
		return nil
	}, Undo: func(_ context.Context, u *session.UndoContext, e session.Entry) error {
		var d agentData
		if err := json.Unmarshal(e.Data, &d); err != nil {
			return err
		}
		fmt.Fprintf(u.Log, "ephemeral container %s stays in pod %s/%s until the pod is replaced (Kubernetes cannot remove one); its file server ends itself when idle\n", d.Container, e.Namespace, d.Pod)
		return nil
	}, Describe: func(e session.Entry) session.Alteration {
		var d agentData
		_ = json.Unmarshal(e.Data, &d)
		return session.Alteration{Text: fmt.Sprintf("file server %s in pod %s/%s", d.Container, e.Namespace, d.Pod), Workload: "pod/" + d.Pod, Role: "mounted"}
	}})
	session.RegisterKind(session.Kind{Name: KindMount, Local: true, Check: func(e session.Entry) error {
		var d mountData
		if err := json.Unmarshal(e.Data, &d); err != nil || !filepath.IsAbs(d.Dir) {
			return fmt.Errorf("a mount entry without an absolute folder")
		}
		return nil
	}, Undo: func(_ context.Context, u *session.UndoContext, e session.Entry) error {
		var d mountData
		if err := json.Unmarshal(e.Data, &d); err != nil {
			return err
		}
		if err := detachUnmount(d.Dir); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("unmount %s: %w", d.Dir, err)
		}
		fmt.Fprintf(u.Log, "unmounted %s\n", d.Dir)
		return nil
	}, Describe: func(e session.Entry) session.Alteration {
		var d mountData
		_ = json.Unmarshal(e.Data, &d)
		return session.Alteration{Text: "mounted at " + d.Dir}
	}})
	// A mount creates its file server's Secret, and patches nothing (the
	// ephemeral container goes through a subresource no undo can revert).
	session.RegisterScope(primitive, session.Scope{Creates: []schema.GroupResource{agentsecret.GVR.GroupResource()}})
}

const primitive = "mount"

type agentData struct {
	Pod       string `json:"pod"`
	Container string `json:"container"`
}

type mountData struct {
	Dir string `json:"dir"`
}

// Spec is one mount.
type Spec struct {
	Pod       *corev1.Pod
	Container string // whose volumes to mount
	Dir       string
	ReadOnly  bool
	Image     string
	Pull      corev1.PullPolicy
}

// skipMount: the service-account token Kubernetes mounts into every
// container is not one of the pod's volumes a developer works on.
func skipMount(m corev1.VolumeMount) bool {
	return strings.HasPrefix(m.MountPath, "/var/run/secrets/kubernetes.io/")
}

// Paths are the mount paths that will appear under the local folder.
func Paths(pod *corev1.Pod, container string) ([]corev1.VolumeMount, error) {
	for _, c := range pod.Spec.Containers {
		if c.Name != container {
			continue
		}
		var mounts []corev1.VolumeMount
		for _, m := range c.VolumeMounts {
			if !skipMount(m) {
				mounts = append(mounts, m)
			}
		}
		if len(mounts) == 0 {
			return nil, fmt.Errorf("container %s of pod %s mounts no volume", container, pod.Name)
		}
		return mounts, nil
	}
	return nil, fmt.Errorf("pod %s has no container %q", pod.Name, container)
}

// Agent is the file server a mount talks to.
type Agent struct {
	Container string
	Port      int
	// Secret is what every connection presents (Secret <Container>).
	Secret string
}

// AddAgent adds the file server to the pod as an ephemeral container, as
// the target container's user and with its volume mounts, journaled first,
// and waits until it runs. A file server of an earlier mount that still
// runs with the same mounts is used again (it serves several laptops); else
// the new one listens on a port no earlier one took.
func AddAgent(ctx context.Context, s *session.Session, kube kubernetes.Interface, spec Spec, progress io.Writer) (Agent, error) {
	mounts, err := Paths(spec.Pod, spec.Container)
	if err != nil {
		return Agent{}, err
	}
	for i := range mounts {
		if spec.ReadOnly {
			mounts[i].ReadOnly = true
		}
		mounts[i].MountPropagation = nil
	}
	for _, ec := range spec.Pod.Spec.EphemeralContainers {
		p, ok := agentPort(ec)
		if !ok {
			continue
		}
		if running(spec.Pod, ec.Name) && sameMounts(ec.VolumeMounts, mounts) {
			// Its secret goes with the session that started it: once that
			// one closed, a new file server is needed.
			secret, err := agentsecret.Read(ctx, kube, spec.Pod.Namespace, ec.Name)
			if err != nil {
				continue
			}
			fmt.Fprintf(progress, "using file server %s, already running in pod %s\n", ec.Name, spec.Pod.Name)
			return Agent{Container: ec.Name, Port: p, Secret: secret}, nil
		}
	}
	suffix := make([]byte, 3)
	_, _ = rand.Read(suffix)
	name := agentPrefix + hex.EncodeToString(suffix)
	secret, err := agentsecret.Create(ctx, s, primitive, spec.Pod.Namespace, name, map[string]string{session.LabelManagedBy: session.ManagedBy})
	if err != nil {
		return Agent{}, err
	}
	e, err := s.Record(ctx, KindAgent, primitive, spec.Pod.Namespace, agentData{Pod: spec.Pod.Name, Container: name})
	if err != nil {
		return Agent{}, err
	}
	pod := spec.Pod
	port, err := addContainer(ctx, kube, pod, func(port int) corev1.EphemeralContainer {
		return agentContainer(spec, name, port, mounts)
	})
	if err != nil {
		_ = s.Discard(ctx, e)
		if apierrors.IsForbidden(err) {
			return Agent{}, fmt.Errorf("cannot add the file server to pod %s: RBAC refuses it (mount needs update on pods/ephemeralcontainers and create on pods/portforward)", pod.Name)
		}
		return Agent{}, fmt.Errorf("add the file server to pod %s: %w", pod.Name, err)
	}
	if _, err := s.Applied(ctx, e, nil); err != nil {
		return Agent{}, err
	}
	fmt.Fprintf(progress, "added file server %s (%s) to pod %s\n", name, spec.Image, pod.Name)
	return Agent{Container: name, Port: port, Secret: secret}, waitRunning(ctx, kube, pod.Namespace, pod.Name, name, spec.Image, progress)
}

const agentPrefix = "cz-files-"

// addContainer adds the ephemeral container build makes for a port no
// file server of the pod listens on, and returns that port. The pod
// changes under us (the kubelet's status, another mount's file server): on
// a conflict it is read again, and the port chosen again.
func addContainer(ctx context.Context, kube kubernetes.Interface, pod *corev1.Pod, build func(port int) corev1.EphemeralContainer) (int, error) {
	port := 0
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if port != 0 {
			fresh, err := kube.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			pod = fresh
		}
		port = freePort(pod)
		changed := pod.DeepCopy()
		changed.Spec.EphemeralContainers = append(changed.Spec.EphemeralContainers, build(port))
		_, err := kube.CoreV1().Pods(pod.Namespace).UpdateEphemeralContainers(ctx, pod.Name, changed, metav1.UpdateOptions{})
		return err
	})
	return port, err
}

// freePort is a port no file server of the pod listens on.
func freePort(pod *corev1.Pod) int {
	port := files.Port
	for _, ec := range pod.Spec.EphemeralContainers {
		if p, ok := agentPort(ec); ok && p >= port {
			port = p + 1
		}
	}
	return port
}

// agentPort is the port an earlier file server of kubectl cz listens on.
// agentContainer is the file server as an ephemeral container: the
// container's volume mounts, its user, listening on the pod's loopback.
func agentContainer(spec Spec, name string, port int, mounts []corev1.VolumeMount) corev1.EphemeralContainer {
	return corev1.EphemeralContainer{
		EphemeralContainerCommon: corev1.EphemeralContainerCommon{
			Name: name, Image: spec.Image, ImagePullPolicy: spec.Pull,
			Args:            []string{"files", "--listen", "127.0.0.1:" + strconv.Itoa(port)},
			Env:             []corev1.EnvVar{agentsecret.Env(name)},
			VolumeMounts:    mounts,
			SecurityContext: agentSecurity(spec.Pod, spec.Container),
		},
	}
}

// DryRun asks the API server to admit, without keeping it, the file
// server's ephemeral container (server-side dry run: Pod Security,
// admission webhooks, validation).
func DryRun(ctx context.Context, kube kubernetes.Interface, spec Spec) error {
	mounts, err := Paths(spec.Pod, spec.Container)
	if err != nil {
		return err
	}
	for i := range mounts {
		mounts[i].ReadOnly = mounts[i].ReadOnly || spec.ReadOnly
		mounts[i].MountPropagation = nil
	}
	pod := spec.Pod.DeepCopy()
	pod.Spec.EphemeralContainers = append(pod.Spec.EphemeralContainers, agentContainer(spec, agentPrefix+"dryrun", files.Port+len(pod.Spec.EphemeralContainers), mounts))
	if _, err := kube.CoreV1().Pods(pod.Namespace).UpdateEphemeralContainers(ctx, pod.Name, pod, metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		return fmt.Errorf("the API server would refuse the file server in pod %s: %w", pod.Name, err)
	}
	return nil
}

func agentPort(ec corev1.EphemeralContainer) (int, bool) {
	if !strings.HasPrefix(ec.Name, agentPrefix) {
		return 0, false
	}
	for i, a := range ec.Args {
		if a == "--listen" && i+1 < len(ec.Args) {
			_, port, _ := net.SplitHostPort(ec.Args[i+1])
			if p, err := strconv.Atoi(port); err == nil {
				return p, true
			}
		}
	}
	return files.Port, true
}

func running(pod *corev1.Pod, name string) bool {
	for _, st := range pod.Status.EphemeralContainerStatuses {
		if st.Name == name {
			return st.State.Running != nil
		}
	}
	return false
}

func sameMounts(a, b []corev1.VolumeMount) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name || a[i].MountPath != b[i].MountPath || a[i].ReadOnly != b[i].ReadOnly || a[i].SubPath != b[i].SubPath {
			return false
		}
	}
	return true
}

// LocalOwner maps the file server's user (the application's) to the user
// who runs kubectl cz, the one behind sudo if any.
func LocalOwner(pod *corev1.Pod, container string) *fusefs.Owner {
	sc := agentSecurity(pod, container)
	o := &fusefs.Owner{RemoteUID: uint32(*sc.RunAsUser), RemoteGID: uint32(*sc.RunAsGroup), LocalUID: uint32(os.Getuid()), LocalGID: uint32(os.Getgid())}
	if u := localnet.InvokingUser(); u != nil {
		o.LocalUID, o.LocalGID, o.AllowOther = uint32(u.UID), uint32(u.GID), true
	}
	return o
}

// agentSecurity runs the file server as the target container's user, so
// it reads and writes what the application can, and within Pod Security
// "restricted".
func agentSecurity(pod *corev1.Pod, container string) *corev1.SecurityContext {
	sc := &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr.To(false),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		ReadOnlyRootFilesystem:   ptr.To(true),
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	uid, gid := int64(65532), int64(65532)
	if p := pod.Spec.SecurityContext; p != nil {
		if p.RunAsUser != nil {
			uid = *p.RunAsUser
		}
		if p.RunAsGroup != nil {
			gid = *p.RunAsGroup
		}
	}
	for _, c := range pod.Spec.Containers {
		if c.Name == container && c.SecurityContext != nil {
			if c.SecurityContext.RunAsUser != nil {
				uid = *c.SecurityContext.RunAsUser
			}
			if c.SecurityContext.RunAsGroup != nil {
				gid = *c.SecurityContext.RunAsGroup
			}
		}
	}
	sc.RunAsUser, sc.RunAsGroup = &uid, &gid
	sc.RunAsNonRoot = ptr.To(uid != 0)
	return sc
}

func waitRunning(ctx context.Context, kube kubernetes.Interface, ns, pod, name, image string, progress io.Writer) error {
	last := ""
	var configErrorSince time.Time
	err := wait.PollUntilContextTimeout(ctx, 300*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := kube.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, st := range p.Status.EphemeralContainerStatuses {
			if st.Name != name {
				continue
			}
			switch {
			case st.State.Running != nil:
				return true, nil
			case st.State.Terminated != nil:
				return false, fmt.Errorf("the file server in pod %s ended: %s %s", pod, st.State.Terminated.Reason, st.State.Terminated.Message)
			case st.State.Waiting != nil:
				w := st.State.Waiting
				// The kubelet retries a container whose Secret its cache has
				// not synced yet: fatal only if it lasts 15 s.
				if w.Reason == "CreateContainerConfigError" && configErrorSince.IsZero() {
					configErrorSince = time.Now()
				}
				if w.Reason == "CreateContainerConfigError" && time.Since(configErrorSince) < 15*time.Second {
					break
				}
				switch w.Reason {
				case "ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError":
					return false, fmt.Errorf("the file server cannot start in pod %s: %s: %s (can the node pull %s? see --agent-image)", pod, w.Reason, w.Message, image)
				}
				if w.Reason != last {
					if msg := "waiting for the file server in pod " + pod + ": " + w.Reason; !lifecycle.Say(ctx, msg) {
						fmt.Fprintln(progress, msg)
					}
					last = w.Reason
				}
			}
		}
		return false, nil
	})
	if wait.Interrupted(err) && ctx.Err() == nil {
		return fmt.Errorf("the file server in pod %s did not start within 2 minutes", pod)
	}
	return err
}

// Connect opens an SFTP session with the file server over port-forward,
// retrying while it starts listening.
func Connect(ctx context.Context, cfg *rest.Config, kube kubernetes.Interface, ns, pod string, agent Agent) (*sftp.Client, func(), error) {
	pf, err := pfconn.Dial(ctx, cfg, kube, ns, pod)
	if err != nil {
		return nil, nil, err
	}
	var lastErr error
	var client *sftp.Client
	err = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 5*time.Second, true, func(ctx context.Context) (bool, error) {
		c, err := pf.DialPort(ctx, agent.Port)
		if err == nil {
			err = present(ctx, c, agent.Secret)
			if errors.Is(err, wire.ErrRefused) {
				c.Close()
				return false, fmt.Errorf("the file server in pod %s: %w", pod, err)
			}
			if err == nil {
				client, err = sftp.NewClientPipe(c, c, sftp.UseConcurrentReads(true), sftp.UseConcurrentWrites(true), sftp.MaxConcurrentRequestsPerFile(64), sftp.MaxPacketUnchecked(files.MaxPacket))
				if err == nil {
					return true, nil
				}
			}
			c.Close()
		}
		lastErr = err
		return false, nil
	})
	if err != nil {
		pf.Close()
		if lastErr != nil && wait.Interrupted(err) && ctx.Err() == nil {
			return nil, nil, fmt.Errorf("the file server in pod %s does not answer: %w", pod, lastErr)
		}
		return nil, nil, err
	}
	return client, func() { client.Close(); pf.Close() }, nil
}

func present(ctx context.Context, c net.Conn, secret string) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	return wire.Present(ctx, c, secret)
}

// Serve mounts the file server's volumes at dir, journaled, until ctx ends,
// then unmounts.
func Serve(ctx context.Context, s *session.Session, remote fusefs.Remote, mounts []corev1.VolumeMount, dir string, readOnly bool, owner *fusefs.Owner, ready func(), watch func(context.Context, *fusefs.Mounted)) error {
	st, err := os.Stat(dir)
	if err != nil || !st.IsDir() {
		return fmt.Errorf("%s is not a folder: create it first", dir)
	}
	var paths []string
	for _, m := range mounts {
		paths = append(paths, m.MountPath)
	}
	e, err := s.Record(ctx, KindMount, primitive, "", mountData{Dir: dir})
	if err != nil {
		return err
	}
	srv, err := fusefs.Mount(dir, remote, paths, readOnly, owner)
	if err != nil {
		_ = s.Discard(ctx, e)
		return fmt.Errorf("mount at %s: %w", dir, err)
	}
	if _, err := s.Applied(ctx, e, nil); err != nil {
		_ = srv.Unmount()
		return err
	}
	// Active means the data path works: a stat of each volume's folder
	// goes through the kernel, this FUSE server and the file server.
	for _, m := range paths {
		if _, err := os.Stat(filepath.Join(dir, m)); err != nil {
			_ = srv.Unmount()
			return fmt.Errorf("the mount at %s does not answer: %w", dir, err)
		}
	}
	if watch != nil {
		go watch(ctx, srv)
	}
	if ready != nil {
		ready()
	}
	<-ctx.Done()
	unmounted := make(chan error, 1)
	go func() { unmounted <- srv.Unmount() }()
	select {
	case err := <-unmounted:
		if err != nil {
			// Busy (a shell inside it): detach; the kernel finishes when it can.
			_ = detachUnmount(dir)
		}
	case <-time.After(5 * time.Second):
		// Gone here, but another mount namespace started meanwhile (ip netns
		// exec, unshare) holds a copy of the mount, so the kernel keeps the
		// connection open: this process's exit closes it.
		_ = detachUnmount(dir)
	}
	return nil
}
