package fusefs

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kubectl-cz/kubectl-cz/agent/files"
	"github.com/kubectl-cz/kubectl-cz/agent/wire"
)

// calls counts what reaches the remote side by SFTP.
type calls struct {
	Remote
	opens, lists *atomic.Int64
}

func (c calls) OpenFile(p string, flags int) (File, error) {
	c.opens.Add(1)
	return c.Remote.OpenFile(p, flags)
}

func (c calls) ReadDir(p string) ([]os.FileInfo, error) {
	c.lists.Add(1)
	return c.Remote.ReadDir(p)
}

// treeServer answers tree streams from the local file system with the
// agent's own code.
type treeServer struct {
	Remote
	trees *atomic.Int64
	asked *treeRequests // if set, notes each request
}

type treeRequests struct {
	mu   sync.Mutex
	reqs []wire.TreeRequest
}

func (r *treeRequests) all() []wire.TreeRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]wire.TreeRequest(nil), r.reqs...)
}

func (s treeServer) Tree(_ context.Context, req wire.TreeRequest) (io.ReadCloser, error) {
	s.trees.Add(1)
	if s.asked != nil {
		s.asked.mu.Lock()
		s.asked.reqs = append(s.asked.reqs, req)
		s.asked.mu.Unlock()
	}
	line, _ := json.Marshal(req)
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(files.ServeTree(bufio.NewReader(bytes.NewReader(append(line, '\n'))), pw))
	}()
	return pr, nil
}

// oldServer is a file server older than the tree stream: it hangs up.
type oldServer struct{ Remote }

func (oldServer) Tree(context.Context, wire.TreeRequest) (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader("")), nil
}

func makeTree(t *testing.T, remote string) {
	t.Helper()
	old := time.Now().Add(-time.Hour)
	for d := 0; d < 12; d++ {
		for s := 0; s < 3; s++ {
			dir := filepath.Join(remote, fmt.Sprintf("d%02d", d), fmt.Sprintf("s%d", s))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			for f := 0; f < 10; f++ {
				p := filepath.Join(dir, fmt.Sprintf("f%d.txt", f))
				os.WriteFile(p, []byte(strings.Repeat(p, f+1)), 0o640)
				os.Chtimes(p, old, old)
			}
		}
	}
	os.WriteFile(filepath.Join(remote, "big.bin"), bytes.Repeat([]byte("0123456789abcdef"), 16<<10), 0o600)
	os.Symlink("d00/s0/f0.txt", filepath.Join(remote, "link"))
}

// cp -r of a tree through the mount: one tree stream lists every folder
// and another brings the small files, so the copy is byte-identical while
// few opens or listings reach the remote side: the open that asks for the
// content, big.bin (not small), and a few that race the streams (an open
// of a file the content stream has not listed yet waits for it).
func TestTreeServesCopyFromMemory(t *testing.T) {
	remote := t.TempDir()
	makeTree(t, remote)
	var opens, lists, trees atomic.Int64
	// Owners mapped, as a real mount does: the tree's entries are too.
	owner := &Owner{RemoteUID: uint32(os.Getuid()), RemoteGID: uint32(os.Getgid()), LocalUID: 4242, LocalGID: 4343}
	dir, m := mountServedAs(t, remote, func(r Remote) Remote { return treeServer{calls{r, &opens, &lists}, &trees, nil} }, owner)
	m.Watched(true) // as with the agent's change stream: what was read stays trusted
	dst := filepath.Join(t.TempDir(), "copy")
	if out, err := exec.Command("cp", "-r", dir, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -r: %v\n%s", err, out)
	}
	if out, err := exec.Command("diff", "-r", "--no-dereference", remote, dst).CombinedOutput(); err != nil {
		t.Fatalf("the copy differs: %v\n%s", err, out)
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(dir, "d05", "s1", "f3.txt"), &st); err != nil || st.Uid != 4242 || st.Gid != 4343 || st.Mode&0o777 != 0o640 {
		t.Errorf("a file listed by the tree: uid %d gid %d mode %o (%v), want 4242 4343 640", st.Uid, st.Gid, st.Mode&0o777, err)
	}
	t.Logf("remote: %d opens, %d listings, %d trees", opens.Load(), lists.Load(), trees.Load())
	// 360 small files and 49 folders: 3 or 4 seen, also with both cores
	// busy (before opens waited for the listing stream: 3-65).
	if n := opens.Load(); n > 10 {
		t.Errorf("%d opens reached the remote side for 361 files", n)
	}
	if n := lists.Load(); n > 12 {
		t.Errorf("%d folders were listed by SFTP, not by the tree stream", n)
	}
	if n := trees.Load(); n != 2 {
		t.Errorf("%d tree streams, want 2 (listings, then content)", n)
	}
	// The content was handed to the kernel as the files' pages at their
	// opens: cp's reads found them there.
	t.Logf("kernel reads from memory: %d", m.tree.listings.kernelReads.Load())
	if n := m.tree.listings.kernelReads.Load(); n > 10 {
		t.Errorf("the kernel asked %d reads of content held in memory", n)
	}
}

// A file server without trees hangs up: the mount walks by listing, once.
func TestTreeFallsBackToListing(t *testing.T) {
	remote := t.TempDir()
	makeTree(t, remote)
	var opens, lists atomic.Int64
	dir := mountLocalVia(t, remote, func(r Remote) Remote { return oldServer{calls{r, &opens, &lists}} })
	out, err := exec.Command("find", dir, "-type", "f").Output()
	if err != nil || strings.Count(string(out), "\n") != 361 {
		t.Fatalf("find: %v: %d files", err, strings.Count(string(out), "\n"))
	}
	dst := filepath.Join(t.TempDir(), "copy")
	if out, err := exec.Command("cp", "-r", dir, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -r: %v\n%s", err, out)
	}
	if out, err := exec.Command("diff", "-r", "--no-dereference", remote, dst).CombinedOutput(); err != nil {
		t.Fatalf("the copy differs: %v\n%s", err, out)
	}
}

// forged answers with a tar stream built by the test.
type forged struct{ stream []byte }

func (f forged) Tree(context.Context, wire.TreeRequest) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(f.stream)), nil
}

// A stream naming entries outside the asked root, or outside the folder
// being listed, is refused: nothing of it is listed.
func TestTreeRefusesEntriesOutsideTheRoot(t *testing.T) {
	for name, entries := range map[string][]string{
		"outside the root":    {"/data", "/etc/passwd"},
		"another folder":      {"/data", "/data/a/b"},
		"not clean":           {"/data", "/data/../etc"},
		"a listing elsewhere": {"/etc"},
	} {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for i, p := range entries {
			h := &tar.Header{Name: p, Typeflag: tar.TypeReg, Mode: 0o644, Format: tar.FormatPAX, PAXRecords: map[string]string{wire.TreeSize: "1"}}
			if i == 0 {
				h.Typeflag = tar.TypeDir
				h.PAXRecords[wire.TreeList] = "1"
			}
			tw.WriteHeader(h)
		}
		tw.Close()
		l := newListings()
		if err := l.readTree(forged{buf.Bytes()}, func(fi os.FileInfo) os.FileInfo { return fi }, "/data", 0, nil, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
		for _, dir := range []string{"/data", "/etc", "/data/a"} {
			if _, _, ok := l.fresh(dir); ok {
				t.Errorf("%s: %s listed", name, dir)
			}
		}
	}
}

// Content no open took is not kept for good: it goes once its time to
// live is over, with no other stream to clean up after it.
func TestTreeContentNotKeptForGood(t *testing.T) {
	old := treeTTL
	treeTTL = 200 * time.Millisecond
	t.Cleanup(func() { treeTTL = old })
	remote := t.TempDir()
	makeTree(t, remote)
	var trees atomic.Int64
	l := newListings()
	if err := l.readTree(treeServer{nil, &trees, nil}, func(fi os.FileInfo) os.FileInfo { return fi }, remote, treeBudget, nil, nil); err != nil {
		t.Fatal(err)
	}
	count := func() int {
		l.trees.mu.Lock()
		defer l.trees.mu.Unlock()
		return len(l.trees.content)
	}
	if n := count(); n != 360 {
		t.Fatalf("%d files' content after the stream, want 360", n)
	}
	time.Sleep(treeTTL + 1500*time.Millisecond)
	if n := count(); n != 0 {
		t.Errorf("%d files' content kept past its time to live", n)
	}
}

// A stream listing more folders than the mount asked for is refused.
func TestTreeRefusesMoreFoldersThanAsked(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i := 0; i <= walkFolders; i++ {
		tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("/data/d%d", i), Typeflag: tar.TypeDir, Mode: 0o755, Format: tar.FormatPAX,
			PAXRecords: map[string]string{wire.TreeSize: "4096", wire.TreeList: "1"}})
	}
	tw.Close()
	if err := newListings().readTree(forged{buf.Bytes()}, func(fi os.FileInfo) os.FileInfo { return fi }, "/data", 0, nil, nil); err == nil {
		t.Errorf("%d folders accepted, %d asked for", walkFolders+1, walkFolders)
	}
}

// Once a walk listed the tree, a cp -r asks for the content alone (the
// listings are not sent twice) and compressed; the copy is byte-identical
// and served from memory.
func TestTreeContentOnlyOnceListed(t *testing.T) {
	remote := t.TempDir()
	makeTree(t, remote)
	var opens, lists, trees atomic.Int64
	asked := &treeRequests{}
	dir, m := mountServedAs(t, remote, func(r Remote) Remote { return treeServer{calls{r, &opens, &lists}, &trees, asked} }, nil)
	m.Watched(true)
	if out, err := exec.Command("find", dir).CombinedOutput(); err != nil {
		t.Fatalf("find: %v\n%s", err, out)
	}
	l := m.tree.listings
	deadline := time.Now().Add(10 * time.Second)
	for {
		l.trees.mu.Lock()
		listed := len(l.trees.listed)
		l.trees.mu.Unlock()
		if listed > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the walk's tree stream did not end")
		}
		time.Sleep(10 * time.Millisecond)
	}
	dst := filepath.Join(t.TempDir(), "copy")
	if out, err := exec.Command("cp", "-r", dir, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -r: %v\n%s", err, out)
	}
	if out, err := exec.Command("diff", "-r", "--no-dereference", remote, dst).CombinedOutput(); err != nil {
		t.Fatalf("the copy differs: %v\n%s", err, out)
	}
	reqs := asked.all()
	if len(reqs) != 2 || reqs[0].Budget != 0 || reqs[0].ContentOnly || !reqs[1].ContentOnly || reqs[1].Budget == 0 {
		t.Fatalf("tree requests %+v, want a walk, then content only", reqs)
	}
	for _, r := range reqs {
		if r.Encoding != wire.TreeZstd {
			t.Errorf("a tree request without compression: %+v", r)
		}
	}
	t.Logf("remote: %d opens, %d listings", opens.Load(), lists.Load())
	if n := opens.Load(); n > 10 {
		t.Errorf("%d opens reached the remote side for 361 files", n)
	}
	// find's listings waited for the walk's stream rather than racing it
	// by SFTP (3-48 of 49 folders under load before; 1-2 now).
	if n := lists.Load(); n > 4 {
		t.Errorf("%d folders were listed by SFTP, not by the tree stream", n)
	}
}

// Once a content stream ended, an open that finds nothing brought for its
// file (it was taken, and the kernel let its pages go) is told so: its
// folder is fetched together, not file by file; no second tree's content
// is asked for within the time to live.
func TestTreeContentEndedLeavesMissesToFolders(t *testing.T) {
	remote := t.TempDir()
	makeTree(t, remote)
	var trees atomic.Int64
	l := newListings()
	r := treeServer{nil, &trees, nil}
	if !l.walkTree(r, remote) {
		t.Fatal("no walk")
	}
	wait := func(what string, done func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !done(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: timed out", what)
			}
		}
	}
	wait("the walk", func() bool { l.trees.mu.Lock(); defer l.trees.mu.Unlock(); return l.trees.listed[remote] })
	dir := filepath.Join(remote, "d03", "s1")
	if !l.fetchTreeContent(r, dir) {
		t.Fatal("the first open of the tree asked for no content")
	}
	wait("the content stream", func() bool { l.trees.mu.Lock(); defer l.trees.mu.Unlock(); return !l.trees.streaming[remote] })
	if !l.contentEnded(dir) {
		t.Error("a content stream that ended is not said to: its misses would go file by file")
	}
	if !l.fetchTreeContent(r, dir) {
		t.Error("a content stream that ended no longer covers the folder within its time to live")
	}
	if n := trees.Load(); n != 2 {
		t.Errorf("%d tree streams, want 2 (no second content stream within its time to live)", n)
	}
}

// A file server older than compression sends plain tar whatever it is
// asked: the mount reads it as before.
func TestTreeReadsPlainTarToo(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "/data", Typeflag: tar.TypeDir, Mode: 0o755, Format: tar.FormatPAX,
		PAXRecords: map[string]string{wire.TreeSize: "4096", wire.TreeList: "1"}})
	tw.WriteHeader(&tar.Header{Name: "/data/f", Typeflag: tar.TypeReg, Mode: 0o644, Format: tar.FormatPAX,
		PAXRecords: map[string]string{wire.TreeSize: "3"}})
	tw.Close()
	l := newListings()
	if err := l.readTree(forged{buf.Bytes()}, func(fi os.FileInfo) os.FileInfo { return fi }, "/data", 0, nil, nil); err != nil {
		t.Fatalf("a plain tree stream: %v", err)
	}
	if entries, _, ok := l.fresh("/data"); !ok || len(entries) != 1 || entries[0].Name() != "f" || entries[0].Size() != 3 {
		t.Errorf("listing %v (%v), want f of 3 bytes", entries, ok)
	}
}

// gatedTree serves tree streams that send nothing until gate closes.
type gatedTree struct {
	treeServer
	gate chan struct{}
}

func (g gatedTree) Tree(ctx context.Context, req wire.TreeRequest) (io.ReadCloser, error) {
	rc, err := g.treeServer.Tree(ctx, req)
	if err != nil {
		return nil, err
	}
	<-g.gate
	return rc, nil
}

// An open of a small file whose folder a content stream has not listed
// yet waits for the stream to announce and bring it, instead of reading
// the file itself (under load cp -r got ahead of the stream: up to 65
// of 361 files were opened one by one).
func TestTreeOpenWaitsForTheListingAhead(t *testing.T) {
	remote := t.TempDir()
	makeTree(t, remote)
	p := filepath.Join(remote, "d11", "s2", "f9.txt")
	sec := time.Unix(time.Now().Add(-time.Hour).Unix(), 0) // kept whole by any tar
	if err := os.Chtimes(p, sec, sec); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	var trees atomic.Int64
	gate := make(chan struct{})
	r := gatedTree{treeServer{nil, &trees, nil}, gate}
	l := newListings()
	l.trees.walked[remote] = time.Now() // its walk is under way
	if !l.fetchTreeContent(r, filepath.Join(remote, "d00")) {
		t.Fatal("no content stream for a walked tree")
	}
	got := make(chan []byte, 1)
	go func() {
		data, _ := l.takeTreeContent(context.Background(), p, versionOf(fi))
		got <- data
	}()
	select {
	case data := <-got:
		t.Fatalf("the open did not wait for the stream still to list its folder (got %d bytes)", len(data))
	case <-time.After(150 * time.Millisecond): // well within listStall
	}
	close(gate)
	want, _ := os.ReadFile(p)
	select {
	case data := <-got:
		if !bytes.Equal(data, want) {
			t.Fatalf("the open got %q, want the stream's %q", data, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the open waited past the stream")
	}
	// A file the stream listed without content (not small) is not waited for.
	big, _ := os.Lstat(filepath.Join(remote, "big.bin"))
	start := time.Now()
	if data, _ := l.takeTreeContent(context.Background(), filepath.Join(remote, "big.bin"), versionOf(big)); data != nil || time.Since(start) > time.Second {
		t.Errorf("big.bin: %d bytes after %v, want none at once", len(data), time.Since(start))
	}
}

// A second cp -r of a tree whose pages the kernel keeps reaches the remote
// side for next to nothing (every folder fetched again made a warm cp -r on
// the cluster 4x slower than the cold one); once the kernel let the pages
// go, the files come by folder, from memory, not one by one.
//
// Known and not yet understood: in about one run in twenty, the kernel asks
// again for the pages of some folders' first file (f0.txt, opened with
// FOPEN_KEEP_CACHE at the warm copy), and those folders are fetched again
// (11-101 opens seen, of 361). The bounds allow that, not a warm copy that
// fetches the tree again.
func TestTreeWarmCopyFetchesNothing(t *testing.T) {
	remote := t.TempDir()
	makeTree(t, remote)
	var opens, lists, trees atomic.Int64
	dir, m := mountServedAs(t, remote, func(r Remote) Remote { return treeServer{calls{r, &opens, &lists}, &trees, nil} }, nil)
	m.Watched(true)
	copyTree := func() {
		t.Helper()
		dst := filepath.Join(t.TempDir(), "copy")
		if out, err := exec.Command("cp", "-r", dir, dst).CombinedOutput(); err != nil {
			t.Fatalf("cp -r: %v\n%s", err, out)
		}
		if out, err := exec.Command("diff", "-r", "--no-dereference", remote, dst).CombinedOutput(); err != nil {
			t.Fatalf("the copy differs: %v\n%s", err, out)
		}
	}
	copyTree()
	time.Sleep(200 * time.Millisecond) // the first copy's closes
	before, memReads := opens.Load(), m.tree.listings.kernelReads.Load()
	copyTree()
	if n := opens.Load() - before; n > 120 {
		t.Errorf("a warm cp -r opened %d files on the remote side", n)
	} else if n > 2 {
		t.Logf("a warm cp -r opened %d files on the remote side (folders whose first file's pages the kernel let go)", n)
	}
	if n := trees.Load(); n != 2 {
		t.Errorf("%d tree streams, want the cold copy's 2", n)
	}

	// The kernel lets every file's pages go.
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	})
	if err != nil {
		t.Fatal(err)
	}
	before, memReads = opens.Load(), m.tree.listings.kernelReads.Load()
	copyTree()
	opened, fromMemory := opens.Load()-before, m.tree.listings.kernelReads.Load()-memReads
	t.Logf("after the pages went: %d opens, %d reads from memory", opened, fromMemory)
	if fromMemory < 200 {
		t.Errorf("after the kernel let the pages go, %d of 360 small files came from a folder's fetch", fromMemory)
	}
}

// A listing of a folder a walk's stream has not reached yet waits for it
// (up to listWait), instead of racing it by SFTP; one of a folder outside
// the walked tree does not wait.
func TestTreeListingWaitsForTheWalkAhead(t *testing.T) {
	remote := t.TempDir()
	makeTree(t, remote)
	var trees atomic.Int64
	gate := make(chan struct{})
	r := gatedTree{treeServer{nil, &trees, nil}, gate}
	l := newListings()
	if !l.walkTree(r, remote) {
		t.Fatal("no walk")
	}
	start := time.Now()
	if l.awaitListing(context.Background(), "/elsewhere") || time.Since(start) > 50*time.Millisecond {
		t.Errorf("a folder outside the walk waited %v", time.Since(start))
	}
	got := make(chan bool, 1)
	go func() { got <- l.awaitListing(context.Background(), filepath.Join(remote, "d11", "s2")) }()
	select {
	case <-got:
		t.Fatal("the listing did not wait for the stream still to reach its folder")
	case <-time.After(100 * time.Millisecond):
	}
	close(gate)
	select {
	case ok := <-got:
		if !ok {
			t.Fatal("the folder's listing was not in the cache once the stream passed it")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the listing waited past the stream")
	}
}

// A stream that stalls (lists nothing for listStall) is not waited for:
// opens and listings go their own way well before treeWait.
func TestTreeStalledStreamIsNotWaitedFor(t *testing.T) {
	remote := t.TempDir()
	makeTree(t, remote)
	var trees atomic.Int64
	gate := make(chan struct{})
	defer close(gate)
	r := gatedTree{treeServer{nil, &trees, nil}, gate}
	l := newListings()
	l.trees.walked[remote] = time.Now()
	if !l.fetchTreeContent(r, remote) {
		t.Fatal("no content stream")
	}
	p := filepath.Join(remote, "d11", "s2", "f9.txt")
	fi, _ := os.Lstat(p)
	start := time.Now()
	if data, _ := l.takeTreeContent(context.Background(), p, versionOf(fi)); data != nil {
		t.Fatal("content from a stream that sent nothing")
	}
	if waited := time.Since(start); waited > treeWait/2 {
		t.Errorf("an open waited %v on a stalled stream", waited)
	}
	start = time.Now()
	if l.awaitListing(context.Background(), filepath.Join(remote, "d05")) || time.Since(start) > listWait+100*time.Millisecond {
		t.Errorf("a listing waited %v on a stalled stream", time.Since(start))
	}
}
